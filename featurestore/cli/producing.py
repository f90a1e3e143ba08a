"""`featurestore produce`: events from a file, or fake ones, to a source's topic."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.progress import Progress

from featurestore.cli.common import RepoOpt, _settings, console, err_console, error_line, friendly_errors, warning_line
from featurestore.errors import FeatureRequestError

if TYPE_CHECKING:
    from featurestore.produce import Invalid

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SHOWN = 20


def parse_duration(text: str, option: str) -> dt.timedelta:
    """'90s', '15m', '3h', '2d' as a timedelta."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise FeatureRequestError(f"{option} {text!r} is not a duration; write it as 30s, 15m, 3h or 2d")
    return dt.timedelta(seconds=float(match[1]) * _UNITS[match[2]])


@friendly_errors
def produce(
    file: Annotated[Path | None, typer.Argument(help="JSON lines, CSV or Parquet file (or a folder of them).",
                                                show_default=False)] = None,
    fake: Annotated[int | None, typer.Option("--fake", metavar="N", help="Generate N plausible events instead of reading a file.",
                                             show_default=False)] = None,
    entities: Annotated[int, typer.Option(help="With --fake: how many distinct entities (join key values).")] = 100,
    over: Annotated[str | None, typer.Option(help="With --fake: spread event times over this period ending now "
                                                  "(30s, 15m, 3h, 2d) [default: 1h].", show_default=False)] = None,
    rate: Annotated[float | None, typer.Option(help="Send at most R events per second; with --fake each event is "
                                                    "stamped with the time it is sent (a live stream).",
                                               show_default=False)] = None,
    source: Annotated[str | None, typer.Option(help="Source to produce to (needed if the repo has several).",
                                               show_default=False)] = None,
    key: Annotated[list[str] | None, typer.Option("--key", help="Event field(s) of the Kafka key [default: the join "
                                                  "keys of the first view reading the source].", show_default=False)] = None,
    partitions: Annotated[int, typer.Option(help="Partitions of the topic if it has to be created.")] = 4,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Send the valid events even if some are invalid.",
                                               metavar="")] = False,
    seed: Annotated[int, typer.Option(help="With --fake: random seed (same seed, same events).")] = 1,
    repo: RepoOpt = Path("."),
) -> None:
    """Send events to a source's topic: checked first with the processor's own rules, keyed by entity."""
    from featurestore.compile import compile_repo
    from featurestore.produce import EventChecker, FakeEvents, KafkaRecord, default_key_fields, paced, produce_records
    from featurestore.runtime.event_files import count_records, input_files, read_records
    from featurestore.runtime.kafka import ensure_topics, producer_config
    from featurestore.runtime.sources import pick_source

    if (file is None) == (fake is None):
        raise FeatureRequestError("give a FILE to send, or --fake N to generate N events (not both)")
    if rate is not None and rate <= 0:
        raise FeatureRequestError(f"--rate {rate} must be above 0 events per second")
    if fake is not None and (fake < 1 or entities < 1):
        raise FeatureRequestError("--fake and --entities need a positive number")
    if file is not None and over is not None:
        raise FeatureRequestError("--over applies to --fake only: a file's events keep their own times")
    if rate is not None and over is not None:
        raise FeatureRequestError("--over and --rate exclude each other: --rate stamps each event with the time it is sent")
    settings = _settings(repo)
    plan = compile_repo(repo)
    src = pick_source(plan, source)
    key_fields = list(key) if key else default_key_fields(plan, src)
    checker = EventChecker(plan, src, settings, key_fields)

    records: Iterable[KafkaRecord]
    if fake is not None:
        generator = FakeEvents(checker.decoder.model, src.timestamp_field, key_fields, entities, seed)
        if rate is None:
            period = parse_duration(over or "1h", "--over")
            values = [orjson.dumps(e) for e in generator.events(fake, dt.datetime.now(dt.timezone.utc), period)]
            records = [KafkaRecord(checker.key(v), v) for v in values]
            what = f"{_events(fake)} (fake) over the last {over or '1h'}"
        else:
            records = (KafkaRecord(checker.key(v), v) for v in  # stamped when sent
                       (orjson.dumps(generator.event(dt.datetime.now(dt.timezone.utc))) for _ in range(fake)))
            what = f"{_events(fake)} (fake, live at {rate:g}/s)"
        total = fake
    else:
        assert file is not None
        files = input_files(file, "event file")
        total = count_records(files)
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task(f"Checking {file}", total=total)
            report = checker.check((r.value for r in read_records(files)), lambda k: progress.advance(task, k))
        bad = report.positions
        if report.invalid:
            _print_invalid(report.invalid, files, report.checked, skip_invalid)
            if not skip_invalid:
                raise typer.Exit(1)
        csv = any(f.suffix.lower() == ".csv" for f in files)
        records = (KafkaRecord(checker.key(v), v) for v in
                   ((checker.normalized(r.value) if csv else r.value)
                    for i, r in enumerate(read_records(files)) if i not in bad))
        total = report.checked - len(bad)
        what = f"{_events(total)} from {file}"

    created = ensure_topics(settings, [src.topic], partitions=partitions)
    if created:
        console.print(f"Created topic '{src.topic}' with {partitions} partitions on {settings.kafka.bootstrap_servers}.")
    started = time.monotonic()
    stream = paced(records, rate) if rate is not None else records
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task(f"Sending to '{src.topic}'", total=total)
        sent = produce_records(producer_config(settings), src.topic, stream, lambda k: progress.advance(task, k))
    keyed = f"keyed by {', '.join(key_fields)}" if key_fields else "without keys (no view reads this source)"
    console.print(f"Sent {what} to '{src.topic}' on {settings.kafka.bootstrap_servers} ({keyed}) "
                  f"in {time.monotonic() - started:.1f} s.", highlight=False)
    if sent != total:
        raise FeatureRequestError(f"sent {sent:,} of {total:,} events")


def _events(n: int) -> str:
    return f"{n:,} event" + ("" if n == 1 else "s")


def _print_invalid(invalid: list[Invalid], files: list[Path], checked: int, skipping: bool) -> None:
    """The first invalid events with where they are in the files."""
    from featurestore.runtime.event_files import read_records

    positions = {i.position: i for i in invalid[:_SHOWN]}
    where: dict[int, str] = {}
    for i, rec in enumerate(read_records(files)):
        if i in positions:
            where[i] = rec.where
            if len(where) == len(positions):
                break
    verdict = (f"sending the other {_events(checked - len(invalid))} (--skip-invalid)" if skipping
               else "nothing sent; fix them, or pass --skip-invalid to send the valid ones")
    (warning_line if skipping else error_line)(f"{len(invalid):,} of {checked:,} events are invalid ({verdict}):")
    for pos, inv in positions.items():
        err_console.print(f"  - {where.get(pos, f'record {pos + 1}')}: {inv.reason}: {inv.detail}", highlight=False,
                          soft_wrap=True)
    if len(invalid) > _SHOWN:
        err_console.print(f"  ... and {len(invalid) - _SHOWN:,} more", highlight=False)
