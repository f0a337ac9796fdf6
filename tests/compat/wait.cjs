// Helpers the compat scripts share: polling for a condition with a deadline, and checks.
'use strict';

const TIMEOUT_MS = 5000;

function waitFor(what, predicate) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      const v = predicate();
      if (v) return resolve(v);
      if (Date.now() - started > TIMEOUT_MS) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

module.exports = { TIMEOUT_MS, waitFor, check };
