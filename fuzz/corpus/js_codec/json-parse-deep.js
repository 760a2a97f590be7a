// The native JSON parser on a document nested 200,000 deep.
function decodeUplink(input) {
  var text = "[".repeat(200000) + "]".repeat(200000);
  return { data: { temperature: JSON.parse(text).length } };
}
