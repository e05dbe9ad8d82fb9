"""etcd's ways of configuring a member, for ``raftkv node``: flags, ``ETCD_*`` variables (as well
as ``RAFTKV_*``), and the YAML ``--config-file``.

Precedence is etcd's: a flag beats a variable, which beats the default. With ``--config-file``
etcd ignores every flag and variable; raftkv refuses them instead, so a setting is never
dropped without a word. The file is parsed with PyYAML: etcd's config file is YAML (lists for
``log-outputs``, maps for the TLS settings), which the standard library cannot read.

A flag or setting that raftkv cannot honour is refused, saying so, unless it has etcd's
default value (which asks for nothing raftkv lacks): an etcd config file written out in full,
with ``enable-v2: false`` and empty TLS settings, still starts a member.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import yaml

__all__ = [
    "CONFIG_FILE_OPTION",
    "DEFAULT_ONLY",
    "DEFAULT_ONLY_OPTIONS",
    "check_node_params",
    "envvars",
]

DEFAULT_ONLY: dict[str, str] = {
    "wal-dir": "",
    "max-snapshots": "5",
    "max-wals": "5",
    "max-txn-ops": "128",
    "cors": "",
    "enable-v2": "false",
    "enable-pprof": "false",
    "proxy": "off",
    "force-new-cluster": "false",
    "strict-reconfig-check": "true",
    "discovery": "",
    "discovery-srv": "",
    "discovery-proxy": "",
    "discovery-fallback": "proxy",
    "auto-tls": "false",
    "peer-auto-tls": "false",
    "metrics": "basic",
    "pre-vote": "false",
    "initial-election-tick-advance": "true",
}
"""etcd flags raftkv accepts only at etcd's default value, with that default."""

_TLS_SECTIONS = ("client-transport-security", "peer-transport-security")
_BOOLEAN_DEFAULTS = {"true", "false"}


def envvars(flag: str) -> list[str]:
    """``RAFTKV_DATA_DIR`` first (raftkv's own), then etcd's ``ETCD_DATA_DIR``."""
    suffix = flag.upper().replace("-", "_")
    return [f"RAFTKV_{suffix}", f"ETCD_{suffix}"]


def _default_only_option(flag: str, default: str) -> click.Option:
    boolean = default in _BOOLEAN_DEFAULTS
    return click.Option(
        [f"--{flag}"],
        default=default,
        envvar=envvars(flag),
        # Go's booleans: "--enable-v2" alone means true, "--enable-v2=false" is allowed.
        is_flag=False,
        flag_value="true" if boolean else None,
        show_default=True,
        hidden=True,  # not raftkv's features: listed in --help's epilogue instead
    )


DEFAULT_ONLY_OPTIONS = [_default_only_option(f, d) for f, d in DEFAULT_ONLY.items()]


def _yaml_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(_yaml_value(key, v) for v in value)
    if isinstance(value, dict):
        raise click.UsageError(f"--config-file: {key!r} must be a single value, not a map")
    return str(value)


def _tls_section_defaults(key: str, section: Any, known: set[str]) -> dict[str, str]:
    """A ``client-transport-security`` or ``peer-transport-security`` map, as the flags it
    stands for (``cert-file`` -> ``--cert-file`` or ``--peer-cert-file``)."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise click.UsageError(f"--config-file: {key!r} must be a map")
    prefix = "" if key == "client-transport-security" else "peer_"
    defaults: dict[str, str] = {}
    for setting, value in section.items():
        name = prefix + str(setting).replace("-", "_")
        if name not in known:
            raise click.UsageError(
                f"--config-file: {key}: raftkv does not know the TLS setting {setting!r}; it "
                "cannot honour it (remove it from the file)"
            )
        defaults[name] = _yaml_value(f"{key}.{setting}", value)
    return defaults


def load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: the file's settings become the command's defaults."""
    if value is None:
        return None
    try:
        raw = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{value} is not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise click.BadParameter(f"{value} must hold a YAML map of etcd settings")
    known = {p.name: p for p in ctx.command.params if p.name}
    defaults: dict[str, str] = {}
    for key, setting in raw.items():
        name = str(key).replace("-", "_")
        if key in _TLS_SECTIONS:
            defaults.update(_tls_section_defaults(str(key), setting, set(known)))
        elif name in known and name != "config_file":
            defaults[name] = _yaml_value(str(key), setting)
        else:
            raise click.UsageError(
                f"--config-file: raftkv does not know the setting {key!r}; it cannot honour it "
                "(remove it from the file)"
            )
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


CONFIG_FILE_OPTION = click.Option(
    ["--config-file"],
    default=None,
    envvar=envvars("config-file"),
    is_eager=True,
    expose_value=True,
    callback=load_config_file,
    help="etcd's YAML configuration file; flags and ETCD_*/RAFTKV_* variables are then refused.",
)


def check_node_params(ctx: click.Context, params: dict[str, Any]) -> None:
    """Refuse what raftkv would otherwise have to ignore; raises click.UsageError."""
    if params.get("config_file"):
        given = [
            p
            for p in ctx.command.params
            if p.name not in (None, "config_file")
            and ctx.get_parameter_source(p.name)
            in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
        ]
        if given:
            names = ", ".join(_how_given(ctx, p) for p in given)
            raise click.UsageError(
                f"--config-file is given, and so is {names}: etcd would ignore the flags and "
                "environment variables; put the settings in the file instead"
            )
    for flag, default in DEFAULT_ONLY.items():
        value = str(params.get(flag.replace("-", "_"), default)).strip().lower()
        if value != default:
            raise click.UsageError(
                f"--{flag}={value}: raftkv cannot honour this etcd setting (it supports only "
                f"etcd's default, {default or 'empty'})"
            )
    if params.get("logger") not in ("zap", "capnslog"):
        raise click.UsageError(
            f"--logger={params.get('logger')}: raftkv logs through Python's logging; use zap "
            "(etcd's default) or capnslog"
        )


def _how_given(ctx: click.Context, param: click.Parameter) -> str:
    assert param.name is not None
    if ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE:
        return f"--{param.name.replace('_', '-')}"
    envvar = param.envvar if isinstance(param, click.Option) else None
    names = [envvar] if isinstance(envvar, str) else list(envvar or [])
    found = [n for n in names if n in os.environ]
    return found[0] if found else f"--{param.name.replace('_', '-')} (environment)"
