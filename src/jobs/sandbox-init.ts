/**
 * A workaround for BullMQ's sandbox start-up (5.81.5, the newest 5.x, and 6.7.0 alike): `Child.initChild`
 * waits for the child's InitCompleted message or its 'close' event, but `Child` removes all its listeners
 * when the child's 'exit' arrives, which comes first. A sandbox that dies while it loads the processor
 * (SIGKILLed, OOM-killed) thus leaves `ChildPool.retain` pending forever: its job stays active with the lock
 * renewed, the slot never takes another job, and `Worker.close()` waits on it. Rejecting `init` on 'exit'
 * (which `Child` emits before dropping its listeners) lets BullMQ's own error path run: the pool discards
 * the child and the job fails that attempt, to be retried with backoff on a fresh child.
 */
import { Child } from 'bullmq';

const patched = Symbol.for('qaas.sandbox-init-rejects-on-exit');

export function rejectSandboxInitOnExit(): void {
  const prototype = Child.prototype as Child & { [patched]?: true };
  if (prototype[patched]) return;
  const init = prototype.init;
  prototype.init = function (this: Child): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
        reject(new Error(`the sandboxed processor exited while starting (code ${code}, signal ${signal})`));
      this.once('exit', onExit);
      init
        .call(this)
        .then(resolve, reject)
        .finally(() => this.off('exit', onExit));
    });
  };
  prototype[patched] = true;
}
