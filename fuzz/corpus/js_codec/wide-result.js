// A result with a million keys.
function decodeUplink(input) {
  var data = { temperature: 1 };
  for (var i = 0; i < 1000000; i++) data["k" + i] = i;
  return { data: data };
}
