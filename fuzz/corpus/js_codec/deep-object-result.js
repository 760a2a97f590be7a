// A result nested 50,000 objects deep (finding C1: converting it used to abort the process).
function decodeUplink(input) {
  var o = { temperature: 1 };
  for (var i = 0; i < 50000; i++) o = { a: o };
  return { data: o };
}
