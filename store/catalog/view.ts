/** The index as a key-value view: the LevelDB index under its lock, or a published catalog. */
export type Batch = Array<{ type: 'put'; key: string; value: string } | { type: 'del'; key: string }>;

export interface IndexView {
  get(key: string): Promise<string | undefined>;
  /** All entries whose key starts with `prefix`, sorted by key. */
  range(prefix: string): Promise<Array<[string, string]>>;
  /** Applies every operation or none. */
  batch(ops: Batch): Promise<void>;
}
