// A result whose property getter never returns.
function decodeUplink(input) {
  var data = {};
  Object.defineProperty(data, "temperature", { enumerable: true, get: function () { for (;;) {} } });
  return { data: data };
}
