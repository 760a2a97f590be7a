// A native sort calling back into an endless comparator.
function decodeUplink(input) {
  var a = [];
  for (var i = 0; i < 1000; i++) a.push(i);
  a.sort(function () { for (;;) {} });
  return { data: { temperature: 1 } };
}
