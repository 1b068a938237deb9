"""Text <-> token ids for the real-time protocol, on top of the `tokenizers` library.

Owns: loading a `tokenizer.json` (a real Llama-3 / Llama-3.2-Vision / MOSS one, or our small one),
the two encoding paths (literal text vs protocol markup), mapping protocol token names to ids
(falling back to the Llama-3 reserved ids when a checkpoint's tokenizer lacks the MOSS names),
decoding (whole and incremental) and training the small byte-level BPE tokenizer of our default model.

It knows nothing of models, frames or the chat template's turn structure (engine.protocol spells the
pieces, engine.data.loader and the generation module assemble them).

Two encoding paths, on purpose:
- `encode(text)` is for anything a user or a data file says (questions, system prompt, captions):
  a string such as "<|eot_id|>" typed by a user is ordinary text, never a control token. Otherwise a
  question could close its own turn and speak for the assistant.
- `encode_markup(text)` parses special-token names; it is for protocol pieces and for assistant
  turns of training records, which this project writes itself.

The wrapper assumes a byte-level BPE tokenizer (Llama-3 family and ours): decoding a run of ordinary
ids between two special tokens on its own gives the same text as decoding them in context.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
from tokenizers.decoders import DecodeStream

from engine import protocol

EOM = "<|eom_id|>"

# Every name the protocol may ask for by name; train_tokenizer gives each an id.
PROTOCOL_TOKENS = list(dict.fromkeys([*protocol.SPECIAL_TOKENS, EOM]))

_RESERVED = re.compile(r"<\|reserved_special_token_\d+\|>")

# Llama-3's pre-tokenisation split (contractions, letter runs, 1-3 digit groups, punctuation,
# newlines, spaces); the small tokenizer uses it so its pieces look like the real model's.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the protocol's special-token names.

    Build with `from_file`, `from_folder` or `train_tokenizer`; the constructor takes a backend that
    the wrapper then owns (it switches the backend's literal-encoding flag on for good).
    """

    def __init__(self, backend: tokenizers.Tokenizer, source: str = "<memory>"):
        self.source = source
        self._tok = backend
        # A MOSS tokenizer may carry protocol names as non-special added tokens; they must never
        # match in literal text, so promote them (add_special_tokens on an existing token only
        # flips its flag).
        added = backend.get_added_tokens_decoder()
        promote = [t.content for t in added.values() if not t.special and t.content in PROTOCOL_TOKENS]
        if promote:
            backend.add_special_tokens([AddedToken(c, special=True, normalized=False) for c in promote])
            added = backend.get_added_tokens_decoder()
        # Literal path: special-token strings in the input are split like any other text. Set once
        # here and never toggled, so concurrent encodes from several threads cannot race on it.
        backend.encode_special_tokens = True

        name_to_id = {t.content: i for i, t in added.items() if t.special}
        aliases = _protocol_aliases(backend)
        name_to_id.update(aliases)
        id_to_name = {i: n for n, i in name_to_id.items() if n not in aliases}
        id_to_name.update({i: n for n, i in aliases.items()})  # 128011 decodes as <|silence|>
        self._special_ids = name_to_id  # name -> id, every token that markup parses
        self._special_names = id_to_name  # id -> the name decode prints
        self._backend_size = backend.get_vocab_size(with_added_tokens=True)
        self._vocab_size = max([self._backend_size, *(i + 1 for i in name_to_id.values())])
        # Longest names first so that no name matches as the prefix of a longer one.
        names = sorted(name_to_id, key=len, reverse=True)
        self._markup_re = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises bare Exceptions with serde messages
            raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from e
        return cls(backend, source=str(path))

    @classmethod
    def from_folder(cls, folder: str | Path) -> Tokenizer:
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no tokenizer.json in {folder}; a model folder needs the tokenizer.json of its "
                "checkpoint (Hugging Face 'fast' tokenizer format)"
            )
        return cls.from_file(path)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json (the literal-encoding flag is a runtime switch and is not saved)."""
        self._tok.save(str(path))

    # ---- ids ----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Ids the embedding table must cover (added tokens and protocol fallbacks included).

        May exceed the LM head's rows: Llama-3.2-Vision embeds <|image|> = 128256 but never predicts it.
        """
        return self._vocab_size

    def id(self, name: str) -> int:
        """Id of a token by name: a protocol/special name, or any entry of the base vocabulary."""
        i = self._special_ids.get(name)
        if i is None:
            i = self._tok.token_to_id(name)
        if i is None:
            raise KeyError(f"token {name!r} is not in the tokenizer {self.source}")
        return i

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_names

    @property
    def bos_id(self) -> int:
        return self.id(protocol.BOS)

    @property
    def eot_id(self) -> int:
        return self.id(protocol.EOT)

    @property
    def pad_id(self) -> int:
        return self.id(protocol.PAD)

    @property
    def silence_id(self) -> int:
        return self.id(protocol.SILENCE)

    @property
    def ellipsis_id(self) -> int:
        return self.id(protocol.ELLIPSIS)

    @property
    def image_id(self) -> int:
        return self.id(protocol.IMAGE)

    @property
    def video_id(self) -> int:
        return self.id(protocol.VIDEO)

    @property
    def start_header_id(self) -> int:
        return self.id(protocol.START_HEADER)

    @property
    def end_header_id(self) -> int:
        return self.id(protocol.END_HEADER)

    # ---- encoding -----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Literal text -> ids. Special-token names inside `text` stay text. No BOS."""
        if not text:
            return []
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_markup(self, text: str) -> list[int]:
        """Text with special-token names (protocol markup) -> ids; the rest is encoded literally.

        Splitting at the names and encoding each piece on its own is what the backend itself does
        with added tokens, so ids match a Hugging Face tokenizer with special-token parsing on.
        """
        if self._markup_re is None:
            return self.encode(text)
        ids: list[int] = []
        for k, piece in enumerate(self._markup_re.split(text)):
            if k % 2:  # odd pieces are the captured names
                ids.append(self._special_ids[piece])
            elif piece:
                ids.extend(self.encode(piece))
        return ids

    def encode_parts(self, parts: Iterable[tuple[str, bool]]) -> list[int]:
        """[(text, is_markup)] as produced by protocol.stream_prefix_parts / question_parts -> ids."""
        ids: list[int] = []
        for text, markup in parts:
            ids.extend(self.encode_markup(text) if markup else self.encode(text))
        return ids

    # ---- decoding -----------------------------------------------------------------------------

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            name = self._special_names.get(i)
            if name is None:
                self._check_id(i)
                run.append(i)
                continue
            if run:
                out.append(self._tok.decode(run, skip_special_tokens=False))
                run = []
            if not skip_special:
                out.append(name)
        if run:
            out.append(self._tok.decode(run, skip_special_tokens=False))
        return "".join(out)

    def stream(self, skip_special: bool = False) -> TextStream:
        return TextStream(self, skip_special=skip_special)

    def _check_id(self, i: int) -> None:
        # The backend silently drops unknown ids; an id outside the vocabulary is a caller's bug.
        if not 0 <= i < self._backend_size:
            raise ValueError(f"token id {i} is outside the vocabulary of {self.source} ({self._vocab_size})")


class TextStream:
    """Incremental decoding: `push(id)` returns the text that this token completes.

    Byte-level BPE can split one UTF-8 character (an emoji, a CJK character) over several tokens;
    `push` returns "" until the character is complete, so the GUI never shows a replacement char.
    Special tokens come out as their names (or nothing with skip_special=True).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._t = tokenizer
        self._skip_special = skip_special
        self._ds = DecodeStream(skip_special_tokens=False)
        self._pending: list[int] = []  # ids pushed since the last text came out (an incomplete char)

    def push(self, token_id: int) -> str:
        token_id = int(token_id)
        name = self._t._special_names.get(token_id)
        if name is not None:
            head = self.flush()
            return head if self._skip_special else head + name
        self._t._check_id(token_id)
        text = self._ds.step(self._t._tok, token_id)
        if text is None:
            self._pending.append(token_id)
            return ""
        self._pending.clear()
        return text

    def flush(self) -> str:
        """Text of a dangling incomplete character (as replacement chars, like `decode`); resets."""
        if not self._pending:
            return ""
        text = self._t._tok.decode(self._pending, skip_special_tokens=False)
        self._pending.clear()
        # The decode state holds the dangling bytes; a fresh one keeps them out of the next char.
        self._ds = DecodeStream(skip_special_tokens=False)
        return text

    def reset(self) -> None:
        self._pending.clear()
        self._ds = DecodeStream(skip_special_tokens=False)


def _protocol_aliases(backend: tokenizers.Tokenizer) -> dict[str, int]:
    """Protocol names the backend lacks, mapped to their Llama-3 ids where that is safe.

    A stock Llama-3.x tokenizer calls 128011 `<|reserved_special_token_3|>`; MOSS trains that id as
    <|silence|>. We alias by id, not by reserved-token number (Llama-3.0 and 3.1 number the reserved
    tokens differently), and only when the tokenizer is Llama-3 shaped (<|begin_of_text|> = 128000)
    and the id is a reserved slot or past the vocabulary (<|image|> on a text-only tokenizer).
    """
    if backend.token_to_id(protocol.BOS) != protocol.LLAMA3_IDS[protocol.BOS]:
        return {}
    aliases: dict[str, int] = {}
    for name, llama_id in protocol.LLAMA3_IDS.items():
        if backend.token_to_id(name) is not None:
            continue
        holder = backend.id_to_token(llama_id)
        if holder is None or _RESERVED.fullmatch(holder):
            aliases[name] = llama_id
    return aliases


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_path: str | Path) -> Tokenizer:
    """Train a byte-level BPE tokenizer (Llama-3 style) on `texts`, save it as tokenizer.json.

    Special tokens (the protocol names plus <|eom_id|>) take the first ids and are never split.
    `vocab_size` counts them and the 256 byte symbols; training may stop short of it on small text.
    """
    specials = PROTOCOL_TOKENS
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size {vocab_size} is below the 256 byte symbols + {len(specials)} specials")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable, no <unk>
        show_progress=False,
    )
    # Records are full of markup ("<|silence|><|video|>" x 155); split it out so that merges go to
    # real words, and train on the pieces markup encoding will actually see.
    names = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True))))
    backend.train_from_iterator((piece for t in texts for piece in names.split(t) if piece), trainer)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    backend.save(str(out_path))
    return Tokenizer.from_file(out_path)
