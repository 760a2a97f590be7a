// Unbounded recursion.
function f(n) { return f(n + 1) + 1; }
function decodeUplink(input) { return { data: { temperature: f(0) } }; }
