// Catastrophic backtracking while the script is evaluated.
var ready = /^(\w+\s?)*$/.test("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!");
function decodeUplink(input) { return { data: { temperature: 1 } }; }
