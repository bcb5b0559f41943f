// Progress output: a redrawn bar on a terminal, plain lines (at most every 10 %) otherwise,
// so logs stay readable in CI.

export class Progress {
  private readonly tty: boolean;
  private lastPct = -1;
  private readonly start = Date.now();
  constructor(private readonly label: string, private readonly total: number, private readonly out: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(out.isTTY);
  }
  update(done: number, extra = ''): void {
    const pct = this.total ? Math.floor((100 * done) / this.total) : 100;
    const secs = ((Date.now() - this.start) / 1000).toFixed(1);
    if (this.tty) {
      const width = 24, fill = Math.round((width * pct) / 100);
      this.out.write(`\r${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${this.total} ${secs}s ${extra}`.padEnd(80));
      if (done >= this.total) this.out.write('\n');
    } else if (pct >= this.lastPct + 10 || done >= this.total) {
      this.lastPct = pct;
      this.out.write(`${this.label}: ${done}/${this.total} (${pct}%) ${secs}s ${extra}\n`);
    }
  }
}
