"""`featurestore init`: a one-file starter feature repository from a template."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from featurestore.cli.common import console, friendly_errors
from featurestore.errors import FeatureRequestError, one_of


@dataclass(frozen=True)
class Template:
    """What the starter README names: the source, a feature to read and its entity key."""

    source: str
    view: str
    feature: str
    key: str


TEMPLATES = {
    "rides": Template(source="trip", view="driver_trips", feature="trips_1h", key="driver_id"),
    "payments": Template(source="payment", view="user_spending", feature="amount_sum_1h", key="user_id"),
}


def write_starter(folder: Path, template: str) -> list[Path]:
    """Write the template's files into `folder` (created if missing); refuses to overwrite."""
    if template not in TEMPLATES:
        raise FeatureRequestError(f"no template '{template}': {one_of(template, TEMPLATES, lead='use ')}")
    files = resources.files("featurestore") / "templates"
    t = TEMPLATES[template]
    contents = {
        "features.py": (files / template / "features.py.tmpl").read_text(),
        "README.md": (files / "README.md.tmpl").read_text().format(
            name=folder.resolve().name, template=template, source=t.source, view=t.view, feature=t.feature, key=t.key),
        ".gitignore": (files / "gitignore.tmpl").read_text(),
    }
    taken = [name for name in contents if (folder / name).exists()]
    if taken:
        raise FeatureRequestError(f"{folder} already has {', '.join(taken)}; choose a new folder (featurestore init DIR)")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in contents.items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


@friendly_errors
def init(
    folder: Annotated[Path, typer.Argument(help="Folder of the new repository (created if missing).")] = Path("."),
    template: Annotated[str, typer.Option(help=f"Starter features: {' or '.join(TEMPLATES)}.")] = "rides",
) -> None:
    """Start a feature repository: one file of definitions and a README of the next commands."""
    write_starter(folder, template)
    t = TEMPLATES[template]
    here = "" if folder.resolve() == Path.cwd().resolve() else f"cd {folder}\n"
    console.print(f"Created {folder / 'features.py'} ({template}) and its README. Next:\n\n"
                  f"{here}"
                  'eval "$(featurestore dev --detach)"\n'
                  "featurestore apply\n"
                  "featurestore produce --fake 5000\n"
                  "featurestore run --until-caught-up\n"
                  f"featurestore online -f {t.view}:{t.feature} -e {t.key}=1", highlight=False, markup=False)
