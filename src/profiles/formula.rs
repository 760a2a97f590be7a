//! Arithmetic formulas on raw values (`175 * x / 65535 - 45`), parsed once at load time.
//!
//! A formula is compiled to postfix operations and evaluated on a small fixed-size stack, so
//! decoding allocates nothing and cannot recurse: the depth is checked when the profile loads.
//! The grammar is deliberately tiny (numbers, `x`, `+ - * /`, parentheses, unary minus): enough
//! for the conversions vendors print in their manuals, and nothing that could loop.

/// Deepest evaluation stack a formula may need; deeper ones are refused at load time.
const MAX_STACK: usize = 16;
/// Longest formula accepted, in characters: a manual's formula is one line.
const MAX_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Num(f64),
    X,
    Add,
    Sub,
    Mul,
    Div,
    Neg,
}

/// A compiled formula of one variable `x`.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    ops: Vec<Op>,
}

impl Formula {
    /// Parses `text`; the error says what is wrong and where (character position from 1).
    pub fn parse(text: &str) -> Result<Formula, String> {
        if text.chars().count() > MAX_LEN {
            return Err(format!("formula is longer than {MAX_LEN} characters"));
        }
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens: &tokens, pos: 0, ops: Vec::new() };
        p.expr(0)?;
        if let Some((at, t)) = p.tokens.get(p.pos) {
            return Err(format!("unexpected {t} at character {at}"));
        }
        let f = Formula { ops: p.ops };
        if f.depth() > MAX_STACK {
            return Err(format!("formula nests deeper than {MAX_STACK} levels"));
        }
        if !f.ops.contains(&Op::X) {
            return Err("formula does not use the raw value `x`".to_owned());
        }
        Ok(f)
    }

    fn depth(&self) -> usize {
        let (mut d, mut max) = (0usize, 0usize);
        for op in &self.ops {
            match op {
                Op::Num(_) | Op::X => d += 1,
                Op::Neg => {}
                _ => d = d.saturating_sub(1),
            }
            max = max.max(d);
        }
        max
    }

    /// The value for raw value `x`. Division by zero gives infinity or NaN, which the decoder
    /// reports as a warning like any non-finite value.
    pub fn eval(&self, x: f64) -> f64 {
        let mut stack = [0f64; MAX_STACK];
        let mut n = 0usize;
        for op in &self.ops {
            // The depth check at parse time guarantees room and operands; `get` keeps that a
            // property of this function alone.
            let (a, b) =
                (n.checked_sub(2).and_then(|i| stack.get(i).copied()), n.checked_sub(1).and_then(|i| stack.get(i).copied()));
            let binary = |f: fn(f64, f64) -> f64| a.zip(b).map(|(a, b)| f(a, b));
            let (pop, push) = match *op {
                Op::Num(v) => (0, Some(v)),
                Op::X => (0, Some(x)),
                Op::Neg => (1, b.map(|b| -b)),
                Op::Add => (2, binary(|a, b| a + b)),
                Op::Sub => (2, binary(|a, b| a - b)),
                Op::Mul => (2, binary(|a, b| a * b)),
                Op::Div => (2, binary(|a, b| a / b)),
            };
            let Some(v) = push else { return f64::NAN };
            n -= pop;
            match stack.get_mut(n) {
                Some(slot) => *slot = v,
                None => return f64::NAN,
            }
            n += 1;
        }
        if n == 1 {
            stack[0]
        } else {
            f64::NAN
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Num(f64),
    X,
    Op(char),
    Open,
    Close,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Num(v) => write!(f, "number {v}"),
            Token::X => f.write_str("`x`"),
            Token::Op(c) => write!(f, "`{c}`"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        match c {
            ' ' | '\t' => {}
            'x' => out.push((at, Token::X)),
            '+' | '-' | '*' | '/' => out.push((at, Token::Op(c))),
            '(' => out.push((at, Token::Open)),
            ')' => out.push((at, Token::Close)),
            '0'..='9' | '.' => {
                let start = i;
                while i + 1 < chars.len() && (chars[i + 1].is_ascii_digit() || chars[i + 1] == '.' || chars[i + 1] == '_') {
                    i += 1;
                }
                let s: String = chars[start..=i].iter().filter(|c| **c != '_').collect();
                let v: f64 = s.parse().map_err(|_| format!("{s:?} at character {at} is not a number"))?;
                out.push((at, Token::Num(v)));
            }
            other => {
                return Err(format!("unexpected {other:?} at character {at}; a formula has numbers, x, + - * / and parentheses"))
            }
        }
        i += 1;
    }
    if out.is_empty() {
        return Err("formula is empty".to_owned());
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [(usize, Token)],
    pos: usize,
    ops: Vec<Op>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.pos).map(|t| t.1)
    }

    /// Precedence climbing: level 0 is `+ -`, level 1 is `* /`; all left-associative.
    fn expr(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_STACK {
            return Err(format!("formula nests deeper than {MAX_STACK} levels"));
        }
        self.term(depth)?;
        while let Some(Token::Op(c @ ('+' | '-'))) = self.peek() {
            self.pos += 1;
            self.term(depth)?;
            self.ops.push(if c == '+' { Op::Add } else { Op::Sub });
        }
        Ok(())
    }

    fn term(&mut self, depth: usize) -> Result<(), String> {
        self.unary(depth)?;
        while let Some(Token::Op(c @ ('*' | '/'))) = self.peek() {
            self.pos += 1;
            self.unary(depth)?;
            self.ops.push(if c == '*' { Op::Mul } else { Op::Div });
        }
        Ok(())
    }

    fn unary(&mut self, depth: usize) -> Result<(), String> {
        let at = self.tokens.get(self.pos).map(|t| t.0);
        match self.peek() {
            Some(Token::Op('-')) => {
                self.pos += 1;
                self.unary(depth + 1)?;
                self.ops.push(Op::Neg);
            }
            Some(Token::Op('+')) => {
                self.pos += 1;
                self.unary(depth + 1)?;
            }
            Some(Token::Num(v)) => {
                self.pos += 1;
                self.ops.push(Op::Num(v));
            }
            Some(Token::X) => {
                self.pos += 1;
                self.ops.push(Op::X);
            }
            Some(Token::Open) => {
                self.pos += 1;
                self.expr(depth + 1)?;
                if self.peek() != Some(Token::Close) {
                    return Err(format!("missing `)` for the `(` at character {}", at.unwrap_or(0)));
                }
                self.pos += 1;
            }
            Some(t) => return Err(format!("unexpected {t} at character {}", at.unwrap_or(0))),
            None => return Err("formula ends where a value was expected".to_owned()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, x: f64) -> f64 {
        Formula::parse(text).unwrap().eval(x)
    }

    #[test]
    fn vendor_formulas_evaluate_like_their_own_code() {
        // Sensirion SHT3x as Decentlab publishes it: 0x64A0 → 23.787670710307466 °C.
        assert_eq!(eval("175 * x / 65535 - 45", 25760.0), 175.0 * 25760.0 / 65535.0 - 45.0);
        assert_eq!(eval("(x - 32768) / 100", 32777.0), 0.09);
        assert_eq!(eval("(25 + x) / 10", 11.0), 3.6);
        assert_eq!(eval("-x", 2.0), -2.0);
        assert_eq!(eval("x - -1", 2.0), 3.0);
        assert_eq!(eval("2 * (3 + x) * 4", 1.0), 32.0);
        assert_eq!(eval("10 - x - 1", 2.0), 7.0);
        assert_eq!(eval("1_000 / x", 4.0), 250.0);
    }

    #[test]
    fn bad_formulas_are_refused_with_a_position() {
        for (text, needle) in [
            ("", "empty"),
            ("x +", "ends"),
            ("(x", "missing `)`"),
            ("x)", "unexpected `)` at character 2"),
            ("x ^ 2", "unexpected '^' at character 3"),
            ("1.2.3 * x", "not a number"),
            ("42", "does not use"),
            ("x x", "unexpected `x`"),
        ] {
            let err = Formula::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let deep = format!("{}x{}", "(".repeat(40), ")".repeat(40));
        assert!(Formula::parse(&deep).is_err());
        let long = "x + 1 ".repeat(100);
        assert!(Formula::parse(&long).is_err());
    }

    #[test]
    fn division_by_zero_is_not_finite() {
        assert!(!eval("1 / x", 0.0).is_finite());
    }
}
