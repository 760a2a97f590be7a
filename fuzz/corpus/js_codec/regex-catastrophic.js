// Catastrophic backtracking inside the native regular expression engine, which never looks at
// the interrupt handler (finding H1).
function decodeUplink(input) {
  var hit = /(a+)+$/.test("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!");
  return { data: { temperature: hit ? 1 : 2 } };
}
