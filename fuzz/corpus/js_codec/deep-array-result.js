// A result nested 50,000 arrays deep.
function decodeUplink(input) {
  var o = [1];
  for (var i = 0; i < 50000; i++) o = [o];
  return { data: { temperature: o } };
}
