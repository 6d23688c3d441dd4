"""CPU per mail of the preparation (what the parse workers do) and of the pipeline's steps (what the
one transaction thread does), on generated mails (``bench/mailgen.py``), in one process.

    python bench/prepare_cpu.py --mails 1000

Prints milliseconds of CPU (``time.process_time``: what the work costs, not how long a busy machine
kept it waiting) per mail for:

- plain ``mailparser.parse_from_bytes`` (the limit the issue measures against);
- ``parse_within_limits`` (mailbridge's parse: mail-parser, the header fields, the new text);
- ``prepare_one`` inline (raw store, MIME limits, parse; the steps then do their pure work);
- ``prepare_one`` as a parse worker does it (with the language and ``prepare.Ahead``: the class,
  the checklist findings, the sanitised HTML);
- the pipeline's steps on SQLite, once after worker-prepared mails, per step.

The config is ``config/examples/000_dmg_mori_digital_support.toml`` (a checklist of five items, a
severity scheme, a calendar) with the generator's support addresses added to its queue. Nothing
is sent; the database is a new SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import mailparser
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mailgen import generate

from mailbridge.app import App
from mailbridge.ingest.mail import InboundMail
from mailbridge.ingest.parser import parse_within_limits
from mailbridge.ingest.prepare import prepare_one
from mailbridge.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "examples" / "000_dmg_mori_digital_support.toml"


def _config(work: Path) -> Path:
    src = EXAMPLE.read_text(encoding="utf-8")
    src = src.replace('var_dir = "var"', f'var_dir = "{work / "var"}"')
    src = src.replace("[database]\n", f'[database]\nurl = "sqlite:///{work / "mailbridge.db"}"\n', 1)
    src = src.replace(
        'addresses = ["software-support@dmgmori.example"]',
        'addresses = ["software-support@dmgmori.example", "support@vendor.example", "hotline@vendor.example"]',
    )
    path = work / "mailbridge.toml"
    path.write_text(src, encoding="utf-8")
    return path


def _per_mail(fn, items) -> float:
    t0 = time.process_time()
    for item in items:
        fn(item)
    return (time.process_time() - t0) / len(items) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    os.environ.setdefault("MAILBRIDGE_MAIL_PASSWORD", "unused")
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger("mailparser").disabled = True

    raws = [m.raw for m in generate(args.mails, seed=args.seed)]
    print(f"{len(raws)} generated mails, {sum(map(len, raws)) / len(raws) / 1024:.1f} KB on average; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = load_settings(_config(work))
        app = App(settings)
        app.upgrade_db()
        detector = app.detector
        detector.preload()
        ahead, var, limit = app.preparer.ahead, settings.var_dir, settings.ingest.max_message_bytes
        rows = [
            ("mailparser.parse_from_bytes", _per_mail(mailparser.parse_from_bytes, raws)),
            ("parse_within_limits", _per_mail(parse_within_limits, raws)),
            ("prepare_one inline", _per_mail(lambda r: prepare_one(r, work / "inline", limit, None), raws)),
        ]
        account = settings.accounts[0].name
        mails = [InboundMail(account, "INBOX", 1, i + 1, raw) for i, raw in enumerate(raws)]
        in_worker = _per_mail(lambda m: prepare_one(m.raw, var, limit, detector, ahead).apply(m), mails)
        rows.append(("prepare_one in a worker", in_worker))
        steps: Counter = Counter()
        pipeline = app.pipeline
        pipeline.steps = [_Timed(s, steps) for s in pipeline.steps]
        dispositions = Counter()
        rows.append(
            ("pipeline (transaction thread)", _per_mail(lambda m: dispositions.update([pipeline.process(m)]), mails))
        )
        app.close()
    base = rows[0][1]
    for label, ms in rows:
        print(f"{label:32s} {ms:7.3f} ms/mail  {ms / base:5.2f} x mail-parser")
    print("dispositions:", {str(k): v for k, v in dispositions.items()})
    for name, seconds in steps.most_common():
        if seconds / len(mails) * 1000 >= 0.01:
            print(f"  step {name:20s} {seconds / len(mails) * 1000:7.3f} ms/mail")
    return 0


class _Timed:
    """A step with the same name and ``records_kept``, its CPU added up per name."""

    def __init__(self, step, seconds: Counter):
        self.step, self.name, self.seconds = step, step.name, seconds
        self.records_kept = getattr(step, "records_kept", False)

    def __call__(self, mail) -> None:
        t0 = time.process_time()
        try:
            self.step(mail)
        finally:
            self.seconds[self.name] += time.process_time() - t0


if __name__ == "__main__":
    raise SystemExit(main())
