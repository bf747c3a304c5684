# SPDX-License-Identifier: Apache-2.0
"""The decode-time code guard (docs/code-policy.md, "Decode-time guard").

The lexical part of a code policy (the banned calls of
:data:`fwassist.codecheck.BANNED_CALLS` whose rules the policy enables, plus any banned
literals) compiled by the C++ runtime into an automaton over the model's token bytes. A
generation with ``policy=`` masks every token that would complete a banned pattern of its
context's text and records each intervention (rule, position) in its stats::

    g = session.generate("...", policy="default")
    g.stats["interventions"]   # [{"rule": "gets", "position": 12, "token": 4711}, ...]
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

from . import _core
from .codecheck.rules import BANNED_CALLS, RULE_IDS, Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from .runtime import Model

__all__ = ["CodePolicy", "CompiledPolicy", "compile_policy"]

CALL, LITERAL = 0, 1


class CodePolicy:
    """Banned calls (identifier -> rule id) and banned literals (text -> rule id)."""

    def __init__(self, calls: Mapping[str, str], literals: Optional[Mapping[str, str]] = None,
                 name: str = "custom") -> None:
        self.name = name
        self.calls = dict(sorted(calls.items()))
        self.literals = dict(sorted((literals or {}).items()))
        for text, rule in (*self.calls.items(), *self.literals.items()):
            if not isinstance(text, str) or not text:
                raise PolicyError(f"code policy {name}: a pattern must be a non-empty string")
            if not isinstance(rule, str) or not rule:
                raise PolicyError(f"code policy {name}: pattern {text!r} needs a rule id")

    @classmethod
    def from_policy(cls, policy: Union[str, Policy]) -> CodePolicy:
        """The lexical part of a codecheck policy: a built-in name (``default``, ``safety``),
        a ``.json`` policy file (:func:`fwassist.codecheck.load_policy`) or a
        :class:`fwassist.codecheck.Policy`: the banned calls of its enabled rules."""
        p = load_policy(policy) if isinstance(policy, str) else policy
        return cls({w: r for w, r in BANNED_CALLS.items() if p.enabled(r)}, name=p.name)

    def key(self) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        return tuple(self.calls.items()), tuple(self.literals.items())

    def patterns(self) -> tuple[list[str], list[int], list[int], list[str]]:
        """(texts, kinds, rule indices, rule names) as the native compiler takes them; rule
        names in the codecheck order, then any others alphabetically."""
        used = set(self.calls.values()) | set(self.literals.values())
        names = [r for r in RULE_IDS if r in used] + sorted(used - set(RULE_IDS))
        index = {r: i for i, r in enumerate(names)}
        texts = list(self.calls) + list(self.literals)
        kinds = [CALL] * len(self.calls) + [LITERAL] * len(self.literals)
        rules = [index[r] for r in (*self.calls.values(), *self.literals.values())]
        return texts, kinds, rules, names


class CompiledPolicy:
    """A :class:`CodePolicy` compiled for one vocabulary (immutable, shareable)."""

    def __init__(self, policy: CodePolicy, native: _core.NativeGuard) -> None:
        self.policy = policy
        self._native = native

    @classmethod
    def for_vocabulary(cls, policy: Union[str, Policy, CodePolicy],
                       token_bytes: list[bytes]) -> CompiledPolicy:
        """``policy`` compiled for a vocabulary given as each id's bytes (a tokenizer other
        than a model's: benchmarks, tests)."""
        if not isinstance(policy, CodePolicy):
            policy = CodePolicy.from_policy(policy)
        texts, kinds, rules, names = policy.patterns()
        tokens = [bytes(t) for t in token_bytes]
        return cls(policy, _native(_core.NativeGuard.for_tokens, texts, kinds, rules, names, tokens))

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def vocab_size(self) -> int:
        return int(self._native.vocab_size)

    @property
    def num_states(self) -> int:
        return int(self._native.num_states)

    def feed(self, data: bytes, state: int = 0) -> tuple[int, Optional[str]]:
        """The automaton's state after ``data`` from ``state`` (0: the empty text), and the
        rule of the first banned pattern completed on the way (None: none)."""
        to, rule = self._native.feed(int(state), bytes(data))
        return int(to), (None if rule < 0 else str(self._native.rule_names[rule]))

    def banned(self, state: int) -> list[int]:
        """The token ids whose bytes complete a banned pattern from ``state``."""
        return [int(t) for t in self._native.banned(int(state))]


def _native(fn: Callable[..., _core.NativeGuard], *args: Any) -> _core.NativeGuard:
    """The native compiler's refusals (a bad pattern, a cap) as PolicyError."""
    try:
        return fn(*args)
    except (ValueError, _core.ArtifactFailure) as e:
        raise PolicyError(str(e.args[-1])) from None


_cache: "weakref.WeakKeyDictionary[Any, dict[Any, CompiledPolicy]]" = weakref.WeakKeyDictionary()


def compile_policy(model: Model, policy: Union[str, Policy, CodePolicy, CompiledPolicy]
                   ) -> CompiledPolicy:
    """``policy`` compiled for ``model``'s vocabulary, once per (model, patterns): a name or
    ``.json`` file, a codecheck :class:`~fwassist.codecheck.Policy`, a :class:`CodePolicy`, or
    an already compiled policy (checked to fit the model)."""
    if isinstance(policy, CompiledPolicy):
        if policy.vocab_size != model.vocab_size:
            raise ValueError(f"the code policy was compiled for a vocabulary of "
                             f"{policy.vocab_size} tokens, the model has {model.vocab_size}")
        return policy
    if isinstance(policy, (str, Policy)):
        policy = CodePolicy.from_policy(policy)
    if not isinstance(policy, CodePolicy):
        raise TypeError(f"policy must be a policy name, a .json path, a codecheck Policy, a "
                        f"CodePolicy or a CompiledPolicy, not {type(policy).__name__}")
    if model.tokenizer is None:
        raise ValueError("the model was exported without a tokenizer: a code policy needs "
                         "the bytes of its tokens")
    per_model = _cache.setdefault(model, {})
    key = policy.key()
    if key not in per_model:
        texts, kinds, rules, names = policy.patterns()
        native = _native(_core.NativeGuard.for_model, model._native, texts, kinds, rules, names)
        per_model[key] = CompiledPolicy(policy, native)
    return per_model[key]
