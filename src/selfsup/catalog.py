"""What ``selfsup list`` prints: the catalogue of methods, backbones, datasets and evaluation
protocols, and one method's paper and defaults or one protocol's options."""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import textwrap


def describe(name: str) -> str:
    """``selfsup list NAME``: a method's or an evaluation protocol's description."""
    from selfsup.evaluate.api import BUILTIN_PROTOCOLS
    from selfsup.evaluate.protocols import EVAL_PROTOCOLS
    from selfsup.methods import METHODS
    from selfsup.registry import UnknownNameError

    protocol = name in EVAL_PROTOCOLS or name in BUILTIN_PROTOCOLS
    if name in METHODS:  # "mlm" is a method and the protocol that evaluates it
        method = describe_method(name)
        return (
            f"{method}\n\n\nevaluation protocol {describe_protocol(name)}" if protocol else method
        )
    if protocol:
        return describe_protocol(name)
    protocols = sorted([*BUILTIN_PROTOCOLS, *EVAL_PROTOCOLS.names()])
    close = difflib.get_close_matches(name, [*METHODS.names(), *protocols], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownNameError(
        f"{name!r} is neither a method nor an evaluation protocol.{hint} Methods: "
        f"{', '.join(METHODS.names())}. Protocols: {', '.join(protocols)}"
    )


def describe_protocol(name: str) -> str:
    """An evaluation protocol's one-line description and its module's docstring (what it
    measures, its paper and its ``--arg`` options)."""
    from selfsup.evaluate.protocols import EVAL_PROTOCOLS

    subsets = "--bank-size, --query-size, --pooling"
    builtin = {  # protocol -> module and the `selfsup evaluate` flags that set it
        "knn": ("selfsup.evaluate.knn", f"--k, --temperature, {subsets}"),
        "linear": ("selfsup.evaluate.linear", subsets),
        "zeroshot": ("selfsup.evaluate.zeroshot", "--query-size (test images)"),
        "retrieval": ("selfsup.evaluate.zeroshot", "--query-size (test pairs)"),
    }
    if name in builtin:
        path, flags = builtin[name]
        head = f"{name}: built in; its options are selfsup evaluate's flags\n({flags}; see "
        head += "selfsup evaluate --help)"
        module = importlib.import_module(path)
    else:
        head = f"{name}: {EVAL_PROTOCOLS.describe()[name]}"
        module = inspect.getmodule(EVAL_PROTOCOLS.get(name))
    return "\n".join([head, "", inspect.cleandoc(getattr(module, "__doc__", None) or "")])


def describe_method(name: str) -> str:
    """A method's paper and defaults (its module docstring), optimiser recipe and every
    ``method_args`` key with its default and the first line of its docstring entry."""
    from selfsup.methods import METHODS

    cls = METHODS.get(name)
    d = cls.defaults
    scaled = " x batch/256" if d.scale_lr else ""
    lines = [
        f"{name}: {METHODS.describe()[name]}",
        f"data: {cls.kind}; optimiser: {d.optimizer}, lr {d.lr:g}{scaled}, weight decay "
        f"{d.weight_decay:g}, warm-up {d.warmup:g} of the budget, {d.schedule} decay",
        "",
        inspect.cleandoc(sys.modules[cls.__module__].__doc__ or ""),
        "",
        "method_args (set one with method_args.KEY=VALUE), default, meaning:",
    ]
    docs = argument_docs(inspect.getdoc(cls) or "") | argument_docs(
        inspect.getdoc(cls.__init__) or ""
    )
    defaults = cls.argument_defaults()
    width = max((len(n) for n in defaults), default=0)
    shown = {
        n: "(required)" if v is inspect.Parameter.empty else repr(v) for n, v in defaults.items()
    }
    value_width = max((len(v) for v in shown.values()), default=0)
    for arg, value in shown.items():
        lines.append(f"  {arg:<{width}}  {value:<{value_width}}  {docs.get(arg, '')}".rstrip())
    fields = [n for n in cls.argument_names() if n not in defaults]
    if fields:
        lines += ["", "and the backbone's transformers config fields (default: the backbone's):"]
        lines += textwrap.wrap(", ".join(fields), 96, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)


def argument_docs(doc: str) -> dict[str, str]:
    """The first sentence of each ``name: text`` entry of a Google-style ``Args:`` section
    (an entry that documents several names, ``a, b: text``, gives its text to each)."""
    entries: dict[str, list[str]] = {}
    inside, indent, current = False, None, []
    for line in doc.splitlines():
        if line.strip() == "Args:":
            inside = True
            continue
        if not inside or not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:  # the section ended
            break
        head, _, text = line.strip().partition(":")
        if depth == indent and text:
            current = [text.strip()]
            for name in head.split(","):
                entries[name.strip()] = current
        elif depth > indent:  # a continuation line
            current.append(line.strip())
    return {n: " ".join(t).split(". ")[0].rstrip(".") + "." for n, t in entries.items()}


def catalog() -> str:
    """``selfsup list``: the methods, backbones, datasets and protocols, one line each."""
    from selfsup.backbones import VISION_BACKBONES
    from selfsup.backbones.text_configs import TEXT_BACKBONES
    from selfsup.data import list_datasets
    from selfsup.evaluate.protocols import EVAL_PROTOCOLS
    from selfsup.methods import METHODS

    lines = []
    for title, entries in (
        ("methods", METHODS.describe()),
        ("vision backbones (or any timm model as timm:NAME)", VISION_BACKBONES.describe()),
        ("text backbones", TEXT_BACKBONES.describe()),
        ("datasets", list_datasets()),
        (
            "evaluation protocols besides knn, linear, zeroshot and retrieval",
            EVAL_PROTOCOLS.describe(),
        ),
    ):
        if not entries:
            continue
        lines.append(f"{title}:")
        width = max(len(n) for n in entries)
        lines += [f"  {name:<{width}}  {desc}" for name, desc in entries.items()]
        lines.append("")
    return "\n".join(lines)
