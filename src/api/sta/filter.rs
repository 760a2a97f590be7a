//! The `$filter` (and `$orderby`) expression language of SensorThings 1.1 (an OData 4 subset):
//! a lexer and a recursive-descent parser into [`Expr`]. Every error names the 1-based character
//! position in the expression and what was expected there.
//!
//! Bounded by construction: expressions longer than [`MAX_FILTER_CHARS`] or nested deeper than
//! [`MAX_DEPTH`] are refused before evaluation, so a hostile filter cannot exhaust the stack.

use chrono::{DateTime, Utc};

/// Longest `$filter` accepted, in characters.
pub const MAX_FILTER_CHARS: usize = 4096;
/// Deepest nesting of parentheses, `not` and operators accepted.
pub const MAX_DEPTH: usize = 64;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    Time(DateTime<Utc>),
    /// A property path such as `result`, `properties/district` or `Datastream/@iot.id`.
    Path(Vec<String>),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
    Call(Function, Vec<Expr>),
}

/// Binary operators, by OData name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Or,
    And,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// The functions the evaluator knows, with their number of arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    SubstringOf,
    Contains,
    StartsWith,
    EndsWith,
    Length,
    IndexOf,
    Substring,
    ToLower,
    ToUpper,
    Trim,
    Concat,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    FractionalSeconds,
    Now,
    MinDateTime,
    MaxDateTime,
    Round,
    Floor,
    Ceiling,
}

impl Function {
    fn by_name(name: &str) -> Option<(Function, usize, usize)> {
        use Function::*;
        // (function, fewest arguments, most arguments)
        Some(match name {
            "substringof" => (SubstringOf, 2, 2),
            "contains" => (Contains, 2, 2),
            "startswith" => (StartsWith, 2, 2),
            "endswith" => (EndsWith, 2, 2),
            "length" => (Length, 1, 1),
            "indexof" => (IndexOf, 2, 2),
            "substring" => (Substring, 2, 3),
            "tolower" => (ToLower, 1, 1),
            "toupper" => (ToUpper, 1, 1),
            "trim" => (Trim, 1, 1),
            "concat" => (Concat, 2, 2),
            "year" => (Year, 1, 1),
            "month" => (Month, 1, 1),
            "day" => (Day, 1, 1),
            "hour" => (Hour, 1, 1),
            "minute" => (Minute, 1, 1),
            "second" => (Second, 1, 1),
            "fractionalseconds" => (FractionalSeconds, 1, 1),
            "now" => (Now, 0, 0),
            "mindatetime" => (MinDateTime, 0, 0),
            "maxdatetime" => (MaxDateTime, 0, 0),
            "round" => (Round, 1, 1),
            "floor" => (Floor, 1, 1),
            "ceiling" => (Ceiling, 1, 1),
            _ => return None,
        })
    }
}

/// Why an expression was refused: where, what was expected there, and what was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at position {position}: expected {expected}, found {found}")]
pub struct FilterError {
    /// 1-based character position in the expression.
    pub position: usize,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Text(String),
    Number(f64),
    Time(DateTime<Utc>),
    Open,
    Close,
    Comma,
    Minus,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Text(t) => format!("the string '{t}'"),
            Tok::Number(n) => format!("the number {n}"),
            Tok::Time(t) => format!("the time {}", t.to_rfc3339()),
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Minus => "'-'".into(),
            Tok::End => "the end of the expression".into(),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, expected: &str, found: String| FilterError { position: i + 1, expected: expected.into(), found };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => {
                out.push((start, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((start, Tok::Close));
                i += 1;
            }
            ',' => {
                out.push((start, Tok::Comma));
                i += 1;
            }
            '-' => {
                out.push((start, Tok::Minus));
                i += 1;
            }
            '\'' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "a closing quote (') for the string", "the end of the expression".into())),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Tok::Text(s)));
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | ':' | '-' | '+')) {
                    // A sign only continues a literal inside a time (an offset) or an exponent.
                    if matches!(chars[i], '-' | '+') {
                        let prev = chars[i - 1];
                        let in_time = chars[start..i].contains(&'T')
                            || (i - start == 4 && chars[i] == '-')
                            || (i - start == 7 && chars[i] == '-');
                        if !(in_time || prev == 'e' || prev == 'E') {
                            break;
                        }
                    }
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word.len() >= 10 && word.as_bytes().get(4) == Some(&b'-') {
                    let time = DateTime::parse_from_rfc3339(&word)
                        .map(|t| t.with_timezone(&Utc))
                        .or_else(|_| {
                            chrono::NaiveDate::parse_from_str(&word, "%Y-%m-%d")
                                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
                        })
                        .map_err(|_| {
                            err(start, "a time such as 2026-11-25T09:00:00Z or a date such as 2026-11-25", format!("'{word}'"))
                        })?;
                    out.push((start, Tok::Time(time)));
                } else {
                    let n: f64 = word
                        .strip_suffix(['d', 'D', 'f', 'F', 'm', 'M', 'L'])
                        .unwrap_or(&word)
                        .parse()
                        .map_err(|_| err(start, "a number such as 25 or 25.5", format!("'{word}'")))?;
                    if !n.is_finite() {
                        return Err(err(start, "a finite number", format!("'{word}'")));
                    }
                    out.push((start, Tok::Number(n)));
                }
            }
            c if c.is_alphabetic() || c == '_' || c == '@' || c == '$' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '@' | '.' | '/' | '$')) {
                    i += 1;
                }
                out.push((start, Tok::Word(chars[start..i].iter().collect())));
            }
            other => {
                return Err(err(start, "a property, a literal, an operator, '(' or ')'", format!("'{other}'")));
            }
        }
    }
    out.push((chars.len(), Tok::End));
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].1
    }

    fn fail<T>(&self, expected: &str) -> Result<T, FilterError> {
        let (pos, tok) = &self.toks[self.at];
        Err(FilterError { position: pos + 1, expected: expected.into(), found: tok.describe() })
    }

    fn word_is(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }

    fn deeper(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(&format!("an expression nested at most {MAX_DEPTH} deep"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        self.deeper()?;
        let mut left = self.and()?;
        while self.word_is("or") {
            self.at += 1;
            let right = self.and()?;
            left = Expr::Binary(Op::Or, Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.not()?;
        while self.word_is("and") {
            self.at += 1;
            let right = self.not()?;
            left = Expr::Binary(Op::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, FilterError> {
        if self.word_is("not") {
            self.at += 1;
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let left = self.additive()?;
        let op = match self.peek() {
            Tok::Word(w) => match w.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                _ => return Ok(left),
            },
            _ => return Ok(left),
        };
        self.at += 1;
        let right = self.additive()?;
        Ok(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    fn additive(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.word_is("add") {
                Op::Add
            } else if self.word_is("sub") {
                Op::Sub
            } else {
                return Ok(left);
            };
            self.at += 1;
            let right = self.multiplicative()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.word_is("mul") {
                Op::Mul
            } else if self.word_is("div") {
                Op::Div
            } else if self.word_is("mod") {
                Op::Mod
            } else {
                return Ok(left);
            };
            self.at += 1;
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if *self.peek() == Tok::Minus {
            self.at += 1;
            self.deeper()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(match inner {
                Expr::Number(n) => Expr::Number(-n),
                other => Expr::Negate(Box::new(other)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        const VALUE: &str = "a value (a property, a literal, a function call or '(')";
        let (_, tok) = self.toks[self.at].clone();
        match tok {
            Tok::Open => {
                self.at += 1;
                let inner = self.or()?;
                if *self.peek() != Tok::Close {
                    return self.fail("')' or an operator");
                }
                self.at += 1;
                Ok(inner)
            }
            Tok::Text(s) => {
                self.at += 1;
                Ok(Expr::Text(s))
            }
            Tok::Number(n) => {
                self.at += 1;
                Ok(Expr::Number(n))
            }
            Tok::Time(t) => {
                self.at += 1;
                Ok(Expr::Time(t))
            }
            Tok::Word(w) => {
                if is_keyword(&w) {
                    return self.fail(VALUE);
                }
                match w.as_str() {
                    "true" => {
                        self.at += 1;
                        return Ok(Expr::Bool(true));
                    }
                    "false" => {
                        self.at += 1;
                        return Ok(Expr::Bool(false));
                    }
                    "null" => {
                        self.at += 1;
                        return Ok(Expr::Null);
                    }
                    _ => {}
                }
                if self.toks[self.at + 1].1 == Tok::Open {
                    let Some((function, fewest, most)) = Function::by_name(&w) else {
                        return self.fail("a known function (substringof, contains, startswith, endswith, length, indexof, substring, tolower, toupper, trim, concat, year, month, day, hour, minute, second, fractionalseconds, now, mindatetime, maxdatetime, round, floor, ceiling)");
                    };
                    let name_at = self.at;
                    self.at += 2;
                    let mut args = Vec::new();
                    if *self.peek() != Tok::Close {
                        loop {
                            args.push(self.or()?);
                            match self.peek() {
                                Tok::Comma => self.at += 1,
                                Tok::Close => break,
                                _ => return self.fail("',' or ')' after a function argument"),
                            }
                        }
                    }
                    if args.len() < fewest || args.len() > most {
                        let (pos, _) = self.toks[name_at];
                        let count = if fewest == most { format!("{fewest}") } else { format!("{fewest} to {most}") };
                        return Err(FilterError {
                            position: pos + 1,
                            expected: format!("{count} argument(s) for {w}"),
                            found: format!("{}", args.len()),
                        });
                    }
                    self.at += 1;
                    return Ok(Expr::Call(function, args));
                }
                if w.split('/').any(str::is_empty) {
                    return self.fail("a property path such as properties/district (no empty segment)");
                }
                self.at += 1;
                Ok(Expr::Path(w.split('/').map(str::to_owned).collect()))
            }
            _ => self.fail(VALUE),
        }
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(w, "and" | "or" | "not" | "eq" | "ne" | "gt" | "ge" | "lt" | "le" | "add" | "sub" | "mul" | "div" | "mod")
}

/// Parse a whole `$filter` expression.
pub fn parse_filter(text: &str) -> Result<Expr, FilterError> {
    let (expr, rest) = parse_prefix(text)?;
    if rest.1 != Tok::End {
        return Err(FilterError {
            position: rest.0 + 1,
            expected: "an operator (and, or, eq, ne, gt, ge, lt, le, add, sub, mul, div, mod) or the end".into(),
            found: rest.1.describe(),
        });
    }
    Ok(expr)
}

/// Parse one `$orderby` item: an expression, optionally followed by `asc` or `desc`.
pub fn parse_order_item(text: &str) -> Result<(Expr, bool), FilterError> {
    let (expr, rest) = parse_prefix(text)?;
    match rest.1 {
        Tok::End => Ok((expr, false)),
        Tok::Word(ref w) if w == "asc" || w == "desc" => {
            let descending = w == "desc";
            let trailing = text.chars().skip(rest.0 + w.chars().count()).collect::<String>();
            if !trailing.trim().is_empty() {
                return Err(FilterError {
                    position: rest.0 + w.chars().count() + 1,
                    expected: "',' or the end after asc/desc".into(),
                    found: format!("'{}'", trailing.trim()),
                });
            }
            Ok((expr, descending))
        }
        other => Err(FilterError { position: rest.0 + 1, expected: "asc, desc, ',' or the end".into(), found: other.describe() }),
    }
}

fn parse_prefix(text: &str) -> Result<(Expr, (usize, Tok)), FilterError> {
    let length = text.chars().count();
    if length > MAX_FILTER_CHARS {
        return Err(FilterError {
            position: MAX_FILTER_CHARS + 1,
            expected: format!("an expression of at most {MAX_FILTER_CHARS} characters"),
            found: format!("{length} characters"),
        });
    }
    let toks = lex(text)?;
    let mut p = Parser { toks, at: 0, depth: 0 };
    let expr = p.or()?;
    let rest = p.toks[p.at].clone();
    Ok((expr, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FilterError {
        parse_filter(text).unwrap_err()
    }

    #[test]
    fn comparisons_logic_and_functions_parse() {
        assert_eq!(
            parse_filter("result gt 25").unwrap(),
            Expr::Binary(Op::Gt, Box::new(Expr::Path(vec!["result".into()])), Box::new(Expr::Number(25.0)))
        );
        let e = parse_filter("(result ge -3.5 and not (result eq 4)) or substringof('Park', name)").unwrap();
        assert!(matches!(e, Expr::Binary(Op::Or, _, _)), "{e:?}");
        let t = parse_filter("phenomenonTime ge 2026-11-25T09:00:00.5+01:00").unwrap();
        let Expr::Binary(_, _, right) = t else { panic!() };
        assert_eq!(*right, Expr::Time("2026-11-25T08:00:00.5Z".parse().unwrap()));
        assert!(parse_filter("year(phenomenonTime) eq 2026 and hour(phenomenonTime) lt now() sub 3").is_ok());
        assert!(parse_filter("Datastream/@iot.id eq 'demo-lht65:air_temperature'").is_ok());
        assert!(parse_filter("name eq 'it''s'").is_ok());
        assert!(parse_filter("result sub 2 gt 1e3").is_ok());
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        let e = err("result gt");
        assert_eq!((e.position, e.found.as_str()), (10, "the end of the expression"));
        assert!(e.expected.starts_with("a value"), "{e}");
        let e = err("result gtt 25");
        assert_eq!(e.position, 8, "{e}");
        assert!(e.expected.contains("operator"), "{e}");
        let e = err("(result gt 25");
        assert_eq!((e.position, e.expected.as_str()), (14, "')' or an operator"));
        assert_eq!(err("name eq 'open").position, 9);
        assert_eq!(err("frobnicate(name)").position, 1);
        assert!(err("startswith(name)").expected.contains("2 argument"));
        assert_eq!(err("result gt 2026-13-45T00:00:00Z").position, 11);
        assert_eq!(err("result eq #").position, 11);
        assert_eq!(err("and").position, 1);
        assert_eq!(err("").position, 1);
    }

    #[test]
    fn hostile_depth_and_length_are_refused_not_overflowed() {
        let deep = format!("{}result{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse_filter(&deep[..MAX_FILTER_CHARS]).unwrap_err().expected.contains("nested"));
        assert!(parse_filter(&deep).unwrap_err().expected.contains("characters"));
        let nots = "not ".repeat(1000) + "true";
        assert!(parse_filter(&nots).unwrap_err().expected.contains("nested"));
        let minus = "-".repeat(1000) + "1";
        assert!(parse_filter(&minus).unwrap_err().expected.contains("nested"));
    }

    /// Every prefix and every one-character deletion of valid filters (what a truncated or
    /// mangled URL gives) parses or fails with a position inside the text, never panics.
    #[test]
    fn mangled_filters_fail_with_a_position_inside_the_text() {
        let seeds = [
            "phenomenonTime ge 2026-11-25T09:00:00.5+01:00 and (result gt -25.5e1 or not (name eq 'it''s'))",
            "substring(name, 2, 3) eq concat('ä', 'ß') and year(now()) ge 2026 and Datastream/@iot.id ne null",
        ];
        for seed in seeds {
            let chars: Vec<char> = seed.chars().collect();
            let mut variants: Vec<String> = (0..=chars.len()).map(|n| chars[..n].iter().collect()).collect();
            variants.extend((0..chars.len()).map(|i| chars[..i].iter().chain(&chars[i + 1..]).collect()));
            for text in variants {
                if let Err(e) = parse_filter(&text) {
                    assert!(e.position >= 1 && e.position <= text.chars().count() + 1, "{text:?}: {e}");
                }
                let _ = parse_order_item(&text);
            }
        }
    }

    #[test]
    fn order_items_take_a_direction() {
        assert!(parse_order_item("phenomenonTime desc").unwrap().1);
        assert!(!parse_order_item("name").unwrap().1);
        assert!(parse_order_item("name sideways").is_err());
        assert!(parse_order_item("name desc x").is_err());
    }
}
