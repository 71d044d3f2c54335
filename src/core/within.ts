/**
 * Resolves as `p` does, or rejects with `message` once `ms` have passed
 * first (a promise that may hang for good: an audit trail whose disk
 * stalled). The timer is cleared as soon as either settles and never holds
 * the process open.
 */
export async function within<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
    (timer as { unref?: () => void }).unref?.();
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
