"""The command line before Hydra reads it, and the config folder it composes from.

`check_overrides` names the setting a typo was meant to be (Hydra would suggest adding the key
with +, which is never what a typo needs, and reports an option it cannot find with its
internals); `close_to` serves settings.py's check of the composed config too.
"""

import difflib
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from .errors import UserError

# The configs: resnet_repro/conf in an installed wheel (pyproject.toml puts them there), else
# conf/ at the top of the checkout (an editable install, as the Makefile makes). Hydra would read
# a relative path as a Python package, so it is given the absolute folder.
_PACKAGED = Path(__file__).resolve().parent / "conf"
CONF_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "conf"


def known_names(conf_dirs: list[Path]) -> dict[str, set[str]]:
    """Each top-level name a command line may set (config groups, sections of config.yaml), and
    the keys below it: for a group, the keys of all its options in every config folder."""
    names: dict[str, set[str]] = {}
    top = load_yaml(conf_dirs[0] / "config.yaml")
    for key, value in top.items():
        if key != "defaults":
            names[str(key)] = set(map(str, value)) if isinstance(value, dict) else set()
    for group in groups(conf_dirs):
        keys = names.setdefault(group, set())
        for option in options(conf_dirs, group).values():
            content = load_yaml(option)
            if isinstance(content, dict) and group != "experiment":
                keys |= {str(k) for k in content if k != "defaults"}
    return names  # experiment's files are global (no keys below it): experiment.x is no setting


def load_yaml(path: Path):
    """A config file's content, for its names: plain YAML (libyaml's parser where PyYAML has
    it), ten times faster than OmegaConf.load, which every command would pay for each of ~60
    files; Hydra itself reads the files it composes."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception as e:  # YAML's errors (and OSError's), of many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} is not a config file Hydra can read ({first}): correct it."
        ) from None


def check_shadowing(conf_dirs: list[Path]) -> None:
    """A file of a --config-dir named like one of the package's is never read: Hydra finds the
    package's first. Say so, rather than run with settings the user did not write."""
    for d in conf_dirs[1:]:
        for own in sorted(d.rglob("*.yaml")):
            name = own.relative_to(d)
            if (conf_dirs[0] / name).exists():
                raise UserError(
                    f"--config-dir {d}: {name} has the name of one of the package's configs, "
                    f"which Hydra reads instead: give yours a name of its own (e.g. "
                    f"{name.with_name('my_' + name.name)})."
                )


def groups(conf_dirs: list[Path]) -> list[str]:
    return sorted(
        {g.name for d in conf_dirs if d.is_dir() for g in d.iterdir() if g.is_dir()} - {"hydra"}
    )


def options(conf_dirs: list[Path], group: str) -> dict[str, Path]:
    """A group's options by name; the package's own come first, as on Hydra's search path."""
    found: dict[str, Path] = {}
    for d in conf_dirs:
        for p in sorted((d / group).glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def config_dirs(argv: list[str]) -> list[Path]:
    """The package's conf/ and the folders of a command line's --config-dir (-cd): a user's own
    experiment files, added to Hydra's search path without editing the package."""
    dirs = [CONF_DIR]
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            dirs.append(Path(value).expanduser().resolve())
    return dirs


def close_to(key: str, conf_dirs: list[Path] = (CONF_DIR,)) -> str:
    """'; did you mean ...?' for a key close to one that exists (a dotted key for a dotted
    one), else ''."""
    names = known_names(list(conf_dirs))
    if "." in key:
        every = [f"{top}.{sub}" for top, subs in names.items() for sub in subs]
    else:
        every = list(names)
    return did_you_mean(key, every)


def did_you_mean(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def check_overrides(argv: list[str]) -> None:
    """A command-line key that names no group and no setting, or an option a group does not
    have: say which one it is close to. (Hydra would suggest adding the key with +, which is
    never what a typo needs, and reports an option it cannot find with its internals.)"""
    dirs = config_dirs(argv)
    for d in dirs[1:]:
        if not d.is_dir():
            raise UserError(f"--config-dir {d}: there is no such folder.")
    check_shadowing(dirs)
    names = known_names(dirs)
    for arg in argv:
        if arg.startswith("hydra.launcher.") and "hydra/launcher=local" in argv:
            check_launcher_key(arg)
        if "=" not in arg or arg.startswith(("-", "+", "~", "hydra")):
            continue
        key, value = arg.split("=", 1)
        key = key.split("@", 1)[0]
        if "/" in key:
            continue
        top, _, sub = key.partition(".")
        sub = sub.split(".", 1)[0]
        if top not in names or (sub and names[top] and sub not in names[top]):
            raise UserError(
                f"{arg}: {key} is neither a setting nor a config group{close_to(key, dirs)} "
                f"(groups: {', '.join(groups(dirs))}; every setting: resnet-train --cfg job)."
            )
        if not sub and top in groups(dirs) and not any(c in value for c in "()*${"):
            known = sorted(options(dirs, top))
            for choice in value.split(","):  # a sweep: model=resnet20,resnet56
                if choice not in known and choice != "null":
                    raise UserError(
                        f"{arg}: {top} has no option {choice}{did_you_mean(choice, known)} "
                        f"(options: {', '.join(known)})."
                    )


def check_launcher_key(arg: str) -> None:
    """hydra/launcher=local's settings are ours (conf/hydra/launcher/local.yaml): a typo among
    them is named here (Hydra would say only that the key is not in its struct)."""
    key = arg.split("=", 1)[0].removeprefix("hydra.launcher.").split(".", 1)[0]
    known = set(OmegaConf.load(CONF_DIR / "hydra" / "launcher" / "local.yaml")) - {"_target_"}
    if key not in known:
        raise UserError(
            f"{arg}: hydra/launcher=local has no setting {key}{did_you_mean(key, known)} "
            f"(settings: {', '.join(sorted(known))})."
        )
