// Starts libuv's threadpool while being imported: the zygote must be refused.
require('fs').readFile(__filename, () => {});
exports.handler = async () => ({});
