"""Committed output parts and the progress record: what makes a run resumable after a crash.

Each scored window is written as one part file under ``<output>.parts/`` (written to a temp
name, then renamed), and only then is ``progress.json`` replaced (also by rename) to say how
many input rows and parts are committed. A process killed at any moment leaves at most one
uncommitted part, which a ``--resume`` run deletes before it continues from the recorded row.
When every row is done, the parts are assembled into the output (byte concatenation for JSON
Lines and CSV, row groups for Parquet) and the parts directory is removed. A clean run goes
through the same parts, so a resumed run's output is byte-identical to an uninterrupted one's.

Safe against process crashes (``kill -9``, Ctrl-C); no fsync, so not against power loss.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import StackscoreError
from .writers import ResultBlock, open_writer, output_format

PROGRESS = "progress.json"


class CommittedOutput:
    def __init__(self, output: str | Path, fingerprint: dict[str, Any], resume: bool = False, overwrite: bool = False):
        self.output = Path(output)
        self.fmt, self.gz = output_format(self.output)
        parent = self.output.parent
        if not parent.is_dir():
            raise StackscoreError(f"{self.output}: output directory {parent} does not exist")
        if self.output.is_dir():
            raise StackscoreError(f"{self.output}: output path is a directory")
        if not os.access(parent, os.W_OK):
            raise StackscoreError(f"{self.output}: output directory {parent} is not writable")
        self.dir = self.output.with_name(self.output.name + ".parts")
        self.ext = "".join(self.output.suffixes[-2:]) if self.gz else self.output.suffix
        self.fingerprint = fingerprint
        self.rows_done = 0  # input rows committed (skipped rows included)
        self.parts = 0
        if self.output.exists() and not overwrite:
            raise StackscoreError(f"{self.output}: output exists; pass --overwrite to replace it")
        if self.dir.exists():
            if resume:
                self._load_progress()
            elif overwrite:
                shutil.rmtree(self.dir)
            else:
                raise StackscoreError(
                    f"{self.output}: an interrupted run left {self.dir.name}/; pass --resume to continue it "
                    "or --overwrite to start over"
                )
        self.resumed_from = self.rows_done
        self.dir.mkdir(exist_ok=True)

    # -- progress record ---------------------------------------------------------------------
    def _load_progress(self) -> None:
        path = self.dir / PROGRESS
        if not path.is_file():  # killed before the first commit: nothing to keep
            shutil.rmtree(self.dir)
            return
        rec = json.loads(path.read_text())
        if rec.get("fingerprint") != self.fingerprint:
            raise StackscoreError(
                f"{self.output}: cannot resume: the input file, artifact or options differ from the interrupted "
                f"run's (recorded {rec.get('fingerprint')}); use --overwrite to start over"
            )
        self.rows_done, self.parts = rec["rows"], rec["parts"]
        for p in self.dir.iterdir():  # parts written after the last commit
            if p.name != PROGRESS and (not p.name.startswith("part-") or int(p.name[5:11]) >= self.parts):
                p.unlink()

    def _save_progress(self) -> None:
        tmp = self.dir / (PROGRESS + ".tmp")
        rec = {"rows": self.rows_done, "parts": self.parts, "fingerprint": self.fingerprint}
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, self.dir / PROGRESS)

    # -- parts -------------------------------------------------------------------------------
    def part_path(self, i: int) -> Path:
        return self.dir / f"part-{i:06d}{self.ext}"

    def commit(self, block: ResultBlock, input_rows: int) -> None:
        """Write ``block`` as the next part, then record ``input_rows`` more rows as done."""
        tmp = self.dir / f"writing{self.ext}"
        w = open_writer(tmp, self.fmt, self.gz, header=self.parts == 0)
        w.write(block)
        w.close()
        os.replace(tmp, self.part_path(self.parts))
        self.parts += 1
        self.rows_done += input_rows
        self._save_progress()

    def finish(self) -> None:
        """Assemble the committed parts into the output, atomically, and remove the parts."""
        partial = self.output.with_name(self.output.name + ".partial")
        paths = [self.part_path(i) for i in range(self.parts)]
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            writer = None
            for p in paths:
                table = pq.read_table(p)
                if writer is None:
                    writer = pq.ParquetWriter(partial, table.schema, compression="zstd")
                writer.write_table(table)
            if writer is not None:
                writer.close()
        else:
            with open(partial, "wb") as out:
                for p in paths:
                    with open(p, "rb") as fh:
                        shutil.copyfileobj(fh, out, 1 << 20)
        os.replace(partial, self.output)
        shutil.rmtree(self.dir)
