/**
 * When a failed registry request is tried again, and when the client gives up.
 *
 * One `Attempts` per operation (one HEAD, one manifest, one tag-list page, one whole blob
 * download or upload with all its resumes). Two bounds hold together:
 *
 *   - Tries: `retries` tries in all (default 6). Between tries the wait is `retryDelayMs`,
 *     doubled each time, at most `maxRetryDelayMs` (defaults 1 s … 15 s), ±10 % jitter; a
 *     Retry-After answer is honoured within those bounds. A failed try that moved at least
 *     `progressFloor` bytes (default 1 MiB) does not use up a try: a long transfer over a
 *     flaky link finishes, but a registry that sends one byte per connection uses its tries up
 *     as fast as one that sends nothing.
 *   - Time: the operation ends by its deadline, waits included: `deadlineMs` (default 10 min)
 *     plus, for a blob, the time its size takes at `minRate` (default 64 KiB/s). The deadline
 *     is passed to every request (http.ts `send`), which cuts a connection that is still
 *     trickling when it expires; a wait that would run past it is not begun.
 *
 * Giving up is StrataError(ERR_REGISTRY), one line, naming the registry, the operation and
 * the last reason ("HTTP 503", "ECONNREFUSED", "connection dropped (aborted)"); never a
 * credential. Each wait is announced through `onRetry` first.
 */
import { StrataError, STORE_ERR } from '../errors.js';

export interface RetryInfo {
  /** What was being done, e.g. "upload of blob sha256:…". */
  what: string;
  /** The try that failed, from 1 (tries used up, so progress can reset it). */
  attempt: number;
  /** Wait before the next try. */
  delayMs: number;
  /** Why, without credentials: "ECONNREFUSED", "HTTP 503", "connection dropped (aborted)". */
  reason: string;
}

export interface RetryPolicy {
  /** Tries per operation before giving up (default 6). */
  retries?: number;
  /** First backoff delay (default 1000 ms), doubled per retry. */
  retryDelayMs?: number;
  /** Longest backoff delay (default 15000 ms). */
  maxRetryDelayMs?: number;
  /** Total time of one operation, waits included (default 10 min); a blob gets size/minRate more. */
  deadlineMs?: number;
  /** The slowest average rate a blob transfer may have, in bytes per second (default 64 KiB/s). */
  minRate?: number;
  /** Bytes a failed try must have moved to not use up a try (default 1 MiB). */
  progressFloor?: number;
  /** Called before each backoff wait. */
  onRetry?(info: RetryInfo): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Attempts {
  /** Epoch milliseconds by which the operation must be done. */
  readonly deadline: number;
  readonly #limitMs: number;
  #used = 0;

  /**
   * @param host registry host[:port], for messages
   * @param what the operation, for messages and onRetry ("download of blob sha256:…")
   * @param size bytes a blob transfer moves (0 for small requests)
   */
  constructor(readonly policy: RetryPolicy, readonly host: string, readonly what: string, size = 0) {
    const minRate = Math.max(1, policy.minRate ?? 64 << 10);
    this.#limitMs = (policy.deadlineMs ?? 600_000) + Math.ceil((size / minRate) * 1000);
    this.deadline = Date.now() + this.#limitMs;
  }

  /** True once the deadline has passed. */
  expired(): boolean {
    return Date.now() >= this.deadline;
  }

  /** A step of the operation succeeded (an upload chunk was stored): the tries start again. */
  progressed(): void {
    this.#used = 0;
  }

  /**
   * After a failed try: waits the backoff and returns, or throws ERR_REGISTRY when the tries
   * or the time are used up. `moved` is the number of payload bytes this try moved.
   */
  async failed(reason: string, moved = 0, retryAfterMs?: number): Promise<void> {
    if (moved >= (this.policy.progressFloor ?? 1 << 20)) this.#used = 0;
    this.#used++;
    const tries = Math.max(1, this.policy.retries ?? 6);
    if (this.expired()) throw this.#timeUp(reason);
    if (this.#used >= tries) {
      throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host}: ${this.what} failed after ${this.#used} tries (${reason})`, {
        hint: 'check that the registry is running and reachable, then run the command again',
      });
    }
    const base = this.policy.retryDelayMs ?? 1000;
    const max = this.policy.maxRetryDelayMs ?? 15_000;
    let delay = Math.min(max, base * 2 ** (this.#used - 1));
    if (retryAfterMs !== undefined && Number.isFinite(retryAfterMs)) delay = Math.min(max, Math.max(delay, retryAfterMs));
    delay = Math.round(delay * (0.9 + Math.random() * 0.2));
    if (Date.now() + delay >= this.deadline) throw this.#timeUp(reason);
    this.policy.onRetry?.({ what: this.what, attempt: this.#used, delayMs: delay, reason });
    await sleep(delay);
  }

  #timeUp(reason: string): StrataError {
    return new StrataError(STORE_ERR.REGISTRY,
      `registry ${this.host}: ${this.what} did not finish within ${Math.round(this.#limitMs / 1000)} s (${reason})`, {
        hint: 'the registry or the network is too slow or stalls; check them, then run the command again',
      });
  }
}
