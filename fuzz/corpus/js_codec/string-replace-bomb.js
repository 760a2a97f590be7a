// Native string building that doubles until memory runs out.
function decodeUplink(input) {
  var s = "ab";
  for (var i = 0; i < 40; i++) s = s.replace(/a|b/g, "$&$&");
  return { data: { temperature: s.length } };
}
