// Throws an object nested 50,000 deep whose string form is computed on the way out.
function decodeUplink(input) {
  var o = {};
  for (var i = 0; i < 50000; i++) o = { a: o };
  o.toString = function () { for (;;) {} };
  throw o;
}
