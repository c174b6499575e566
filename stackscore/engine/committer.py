"""Committed output parts and the progress record: what makes a run resumable after a crash.

Each scored window is written as one part file under ``<output>.parts/`` (written to a temp
name, then renamed), and only then is ``progress.json`` replaced (also by rename) to say how
many input rows and parts are committed. A process killed at any moment leaves at most one
uncommitted part, which a ``--resume`` run deletes before it continues from the recorded row.
When every row is done, the parts are assembled into the output (byte concatenation for JSON
Lines and CSV, row groups for Parquet) and the parts directory is removed. A clean run goes
through the same parts, so a resumed run's output is byte-identical to an uninterrupted one's.

Safe against process crashes (``kill -9``, Ctrl-C); no fsync, so not against power loss.

One run per output: ``OUTPUT.lock`` (created with O_EXCL, holding the owner's pid) keeps a second
run, a ``--resume`` or an ``--overwrite`` away from a live run's parts; a lock whose process is
gone (killed) is stale and taken over. An output that is the input (same file, also through a
symlink or hard link) is refused before anything is written.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import StackscoreError
from .writers import ResultBlock, open_writer, output_format

PROGRESS = "progress.json"
# What a run writes in OUTPUT.parts/: committed parts, the part being written, the progress record
# (and the file managers' own metadata, which a run may remove with the directory).
OWN_PART = re.compile(r"^(?:(?:part-\d{6,}|writing|assembled)(?:\.[A-Za-z0-9]+){1,2}|progress\.json(?:\.tmp)?|\.DS_Store|Thumbs\.db|desktop\.ini)$")
PART_NUMBER = re.compile(r"^part-(\d{6,})\.")  # part_path's {i:06d}: seven digits from the millionth part


def check_output_path(output: Path, input_path: Path | None = None) -> None:
    """Refuse an output that cannot be written, or that is the input itself."""
    output_format(output)
    parent = output.parent
    if not parent.is_dir():
        raise StackscoreError(f"{output}: output directory {parent} does not exist")
    if output.is_dir():
        raise StackscoreError(f"{output}: output path is a directory")
    if not os.access(parent, os.W_OK):
        raise StackscoreError(f"{output}: output directory {parent} is not writable")
    if input_path is not None:
        if _same_file(output, input_path):
            raise StackscoreError(f"{output}: this is the input file {input_path}; write the predictions to another path (--overwrite does not apply)")


def _same_file(a: Path, b: Path) -> bool:
    """The same path, a symlink to it or a hard link (False where either does not exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_side_file(path: Path, flag: str, inputs: list[Path], output: str | Path) -> None:
    """A file a run writes beside its predictions (``--stats-json``), checked before any work:
    its directory exists and is writable, and it is none of the run's inputs, its output, or the
    output's lock and parts (written last, it would replace them after the whole run)."""
    if not path.parent.is_dir():
        raise StackscoreError(f"{path}: {flag} directory {path.parent} does not exist")
    if path.is_dir():
        raise StackscoreError(f"{path}: {flag} is a directory")
    if not os.access(path.parent, os.W_OK):
        raise StackscoreError(f"{path}: {flag} directory {path.parent} is not writable")
    directory = str(output).endswith(("/", os.sep))  # a directory output (Ray shards)
    output = Path(output)
    taken = [(p, "the input file") for p in inputs] + [(output, "the output")]
    taken += [(output.with_name(output.name + s), f"the output's {s[1:]}") for s in (".lock", ".parts")]
    for other, what in taken:
        if _same_file(path, other):
            raise StackscoreError(f"{path}: {flag} is {what} ({other}); name another file")
    if directory or output.is_dir():  # nothing inside a directory output
        if path.resolve().is_relative_to(output.resolve()):
            raise StackscoreError(f"{path}: {flag} is inside the output directory {output}; name another file")


def write_side_file(path: Path, data: bytes) -> None:
    """Written beside and renamed: a crash leaves the old file or the new one, never half of it."""
    atomic_write(path, data)


def _start_time(pid: int) -> str:
    """The process's start time (Linux: /proc/PID/stat field 22), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


HOST = re.sub(r"\s+", "_", socket.gethostname()) or "localhost"


def _here(host: str) -> bool:
    """Whether a lock's host is this machine (locks from before the host was recorded: yes)."""
    return host in ("", HOST)


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return started in ("", "-") or not _start_time(pid) or _start_time(pid) == started


class OutputLock:
    """``OUTPUT.lock``: at most one run writes an output (and its parts) at a time."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".lock")
        self.held = False

    def _owner(self) -> tuple[int, str, str] | None:
        """(pid, start time, host) in the lock (host "" in locks written before it was recorded),
        None if unreadable; waits briefly for a lock being written."""
        for _ in range(20):
            try:
                text = self.path.read_text().split()
            except FileNotFoundError:
                return None
            except OSError:
                text = []
            if text:
                try:
                    return int(text[0]), (text[1] if len(text) > 1 else ""), (text[2] if len(text) > 2 else "")
                except ValueError:  # a file of the user's by that name: never taken over (deleted)
                    raise StackscoreError(f"{self.path}: exists and is not a stackscore output lock; move it, or write to another output") from None
            time.sleep(0.05)  # created by O_EXCL a moment ago, pid not written yet
        return None

    def acquire(self) -> "OutputLock":
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and not _here(owner[2]):
                    # On a shared file system: a process on another machine cannot be checked from
                    # here, so its lock holds until that run removes it (or a person does).
                    raise StackscoreError(
                        f"{self.output}: another stackscore run (pid {owner[0]} on host {owner[2]}) is writing this output ({self.path.name}); "
                        "wait for it to finish (delete the lock only if that run is gone)"
                    ) from None
                if owner is not None and _alive(owner[0], owner[1]):
                    raise StackscoreError(
                        f"{self.output}: another stackscore run (pid {owner[0]}) is writing this output ({self.path.name}); "
                        "wait for it to finish (delete the lock only if that process is not a stackscore run)"
                    ) from None
                self._take_over(owner)  # stale: the run that held it is gone (killed)
                continue
            except OSError as exc:
                raise StackscoreError(f"{self.path}: cannot create the output lock: {exc.strerror}") from None
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {_start_time(os.getpid()) or '-'} {HOST}\n")
            self.held = True
            return self
        raise StackscoreError(f"{self.path}: could not take the output lock (several runs are starting at once?)")

    def _take_over(self, stale: tuple[int, str, str] | None) -> None:
        """Remove the lock judged stale, if it still is that lock. Under a mutex (``LOCK.takeover``,
        created exclusively): two runs that both found the killed run's lock would otherwise both
        remove "it", the second removing the fresh lock the first had just taken, and both run.
        A mutex left by a run killed in these few lines is stale after 10 s."""
        mutex = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - mutex.stat().st_mtime > 10:
                    mutex.unlink()
            except FileNotFoundError:
                pass
            time.sleep(0.05)
            return
        try:
            if self._owner() == stale:  # not a fresh lock another run took meanwhile
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)
            mutex.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def write_error(output: Path, exc: OSError, where: Path) -> StackscoreError:
    """An OS error while writing the output as one line; the committed parts are kept."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return StackscoreError(
            f"{output}: no space left on the device while writing {exc.filename or where} (finishing needs about twice "
            f"the output's size: the parts plus the assembled file); the committed rows are kept in "
            f"{output.name}.parts/: free space, then rerun with --resume"
        )
    return StackscoreError(f"{output}: cannot write {exc.filename or where}: {exc.strerror or exc}")


class CommittedOutput:
    def __init__(self, output: str | Path, fingerprint: dict[str, Any], resume: bool = False, overwrite: bool = False):
        self.output = Path(output)
        self.fmt, self.gz = output_format(self.output)
        check_output_path(self.output)
        self.dir = self.output.with_name(self.output.name + ".parts")
        self.ext = "".join(self.output.suffixes[-2:]) if self.gz else self.output.suffix
        self.fingerprint = fingerprint
        self.rows_done = 0  # input rows committed (skipped rows included)
        self.parts = 0
        self._first_schema = None  # Parquet: the first part's, which every later part must have
        if self.output.exists() and not overwrite:
            raise StackscoreError(f"{self.output}: output exists; pass --overwrite to replace it")
        if self.dir.exists() and not self.dir.is_dir():
            raise StackscoreError(f"{self.dir}: a file where this run keeps its parts directory; move it, or write to another output")
        if self.dir.exists():
            if resume:
                self._load_progress()
            elif overwrite:
                self._remove_parts()
            else:
                raise StackscoreError(
                    f"{self.output}: an interrupted run left {self.dir.name}/; pass --resume to continue it "
                    "or --overwrite to start over"
                )
        self.resumed_from = self.rows_done
        self.dir.mkdir(exist_ok=True)

    def discard_if_empty(self) -> None:
        """After a failed run: a parts directory with nothing committed in it (an input error in
        the first window, say) holds nothing to resume, so it goes, and running again needs no
        --overwrite. One with committed parts is kept for --resume."""
        if self.parts == 0 and self.rows_done == 0 and not (self.dir / PROGRESS).exists() and self.dir.is_dir() and not self._foreign():
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- progress record ---------------------------------------------------------------------
    def _load_progress(self) -> None:
        path = self.dir / PROGRESS
        if not path.is_file():  # killed before the first commit: nothing to keep
            self._remove_parts()
            return
        try:
            rec = json.loads(path.read_bytes())
            rec["rows"], rec["parts"]
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise StackscoreError(f"{path}: unreadable progress record ({exc}); use --overwrite to start over") from None
        if rec.get("fingerprint") != self.fingerprint:
            raise StackscoreError(
                f"{self.output}: cannot resume: the input file, artifact or options differ from the interrupted "
                f"run's (recorded {rec.get('fingerprint')}); use --overwrite to start over"
            )
        self.rows_done, self.parts = rec["rows"], rec["parts"]
        self._refuse_foreign()
        for p in self.dir.iterdir():  # parts written after the last commit
            number = PART_NUMBER.match(p.name)
            if p.name != PROGRESS and (number is None or int(number.group(1)) >= self.parts):
                p.unlink()

    def _foreign(self) -> list[str]:
        """Names in the parts directory that a run does not write there (a user's files)."""
        return sorted(p.name for p in self.dir.iterdir() if not OWN_PART.match(p.name))

    def _refuse_foreign(self) -> None:
        foreign = self._foreign()
        if foreign:
            raise StackscoreError(
                f"{self.dir}: holds files stackscore does not write there ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                "move them, or write to another output"
            )

    def _remove_parts(self) -> None:
        """Remove the parts directory, only when everything in it is a run's own."""
        self._refuse_foreign()
        shutil.rmtree(self.dir)

    def _save_progress(self) -> None:
        rec = {"rows": self.rows_done, "parts": self.parts, "fingerprint": self.fingerprint}
        atomic_write(self.dir / PROGRESS, json.dumps(rec), tmp=self.dir / (PROGRESS + ".tmp"))  # a name OWN_PART knows

    # -- parts -------------------------------------------------------------------------------
    def part_path(self, i: int) -> Path:
        return self.dir / f"part-{i:06d}{self.ext}"

    def commit(self, block: ResultBlock, input_rows: int) -> None:
        """Write ``block`` as the next part, then record ``input_rows`` more rows as done."""
        tmp = self.dir / f"writing{self.ext}"
        try:
            w = open_writer(tmp, self.fmt, self.gz, header=self.parts == 0)
            w.write(block)
            w.close()
            if self.fmt == "parquet":
                self._check_schema(tmp)
            os.replace(tmp, self.part_path(self.parts))
            self.parts += 1
            self.rows_done += input_rows
            self._save_progress()
        except OSError as exc:
            raise write_error(self.output, exc, tmp) from None

    def _check_schema(self, part: Path) -> None:
        """One Parquet file has one schema: a part whose columns' types differ from the first
        part's (several inputs with other id types) stops the run now, in one line, not after the
        last row when the parts are assembled."""
        import pyarrow.parquet as pq

        if self.parts == 0:
            return
        if self._first_schema is None:  # (a resumed run's first part is on disk already)
            self._first_schema = pq.read_schema(self.part_path(0))
        schema, first = pq.read_schema(part), self._first_schema
        if not schema.equals(first):
            part.unlink(missing_ok=True)
            diff = [f"'{f.name}' is {f.type}, earlier rows' {first.field(f.name).type}" for f in schema if f.name in first.names and not f.type.equals(first.field(f.name).type)]
            raise StackscoreError(
                f"{self.output}: {'; '.join(diff) or 'other columns than the earlier rows'}: a Parquet file holds one type per column "
                "(inputs whose id columns differ): write .jsonl or .csv, a directory of shards, or choose another --id-field"
            )

    def finish(self) -> None:
        """Assemble the committed parts into the output, atomically, and remove the parts.

        Assembling copies the parts into one file before the parts are removed, so for a moment
        the output takes twice its size. When the free space is short of that, say so *before*
        starting (the parts stay, and ``--resume`` finishes once space is freed).
        """
        paths = [self.part_path(i) for i in range(self.parts)]
        need = sum(p.stat().st_size for p in paths)
        free = shutil.disk_usage(self.output.parent).free
        if free < need + (1 << 20):
            raise StackscoreError(
                f"{self.output}: assembling the output needs about {_mb(need)} free (its size again: the "
                f"{self.parts} committed parts, {_mb(need)}, are copied into it, so about twice the output's size in all), "
                f"and {_mb(free)} is free; the parts are kept in {self.dir.name}/: free space, then rerun with --resume"
            )
        # Assembled inside the parts directory (the output's file system, a name no user file has),
        # then renamed onto the output: OUTPUT.partial beside it could be a file of the user's.
        partial = self.dir / f"assembled{self.ext}"
        try:
            self._assemble(paths, partial)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise write_error(self.output, exc, partial) from None

    def _assemble(self, paths: list[Path], partial: Path) -> None:
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
        if self._foreign():  # a file put there during the run: kept, with its directory
            for p in self.dir.iterdir():
                if OWN_PART.match(p.name):
                    p.unlink()
        else:
            shutil.rmtree(self.dir)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
