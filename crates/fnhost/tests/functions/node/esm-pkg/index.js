// An ES module handler: a .js file in a "type": "module" package.
import { join } from 'node:path';
export async function handler(event) {
  return { kind: 'esm-pkg', joined: join('a', 'b') };
}
