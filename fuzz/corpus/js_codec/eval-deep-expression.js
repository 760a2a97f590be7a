// The parser on an expression nested 200,000 parentheses deep.
function decodeUplink(input) {
  return { data: { temperature: eval("(".repeat(200000) + "1" + ")".repeat(200000)) } };
}
