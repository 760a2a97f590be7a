// A result that contains itself.
function decodeUplink(input) {
  var data = { temperature: 1 };
  data.self = data;
  return { data: data };
}
