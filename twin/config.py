"""twin.toml: one file, validated into typed sections at load; unknown keys are errors that name the key.

Secrets never live here: tokens come from the environment (TWIN_TELEGRAM_TOKEN, TWIN_DISCORD_TOKEN,
TWIN_VLLM_API_KEY). `twin init` writes a commented template (TEMPLATE below).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from twin.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OwnerConfig(Section):
    """Who the owner is on each platform: ids (Telegram "user123" or 123, Discord snowflakes) or, for
    WhatsApp, which has no ids, the name the owner's phone shows for them."""

    name: str | None = None
    telegram: list[str] = Field(default_factory=list)
    discord: list[str] = Field(default_factory=list)
    whatsapp: list[str] = Field(default_factory=list)

    def ids(self, platform: str) -> list[str]:
        return list(getattr(self, platform, []))


class IngestConfig(Section):
    session_gap_minutes: float = Field(60, gt=0)
    include: list[str] = Field(default_factory=list)


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py, MaxLoRARanks


class TrainingConfig(Section):
    """`twin train`: the dataset's settings and the trainer's hyperparameters (training.trainer takes this
    section as it is); command-line flags override them."""

    base_model: str | None = None  # a hub id, a local directory or a .gguf file; none: the embedded default
    name: str = "twin"
    max_tokens: int = Field(1024, ge=64)  # row length; longer samples are cut to this
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # overrides epochs when set
    time_budget_minutes: float | None = Field(None, gt=0)
    lr: float = Field(2e-4, gt=0)
    r: int = 16
    alpha: int = 32
    grad_accum: int = Field(4, ge=1)
    micro_batch_rows: int = Field(2, ge=1)
    train_on: Literal["owner", "all"] = "owner"
    scrub_pii: bool = True
    cap_per_chat: int | None = Field(None, gt=0)
    holdout_fraction: float = Field(0.1, ge=0, lt=1)
    gradient_checkpointing: bool = False  # on every layer; off: training.budget checkpoints what max_memory_gb needs
    max_memory_gb: float | None = Field(None, gt=0)  # none: what the machine has free (training.budget)
    qlora: bool = False  # the base must then be loaded in 4 bit: load_base(..., load_in_4bit=True)
    # fp32 weights (a CPU): "auto" runs the forward in bf16 mixed precision where the CPU has bf16 natively
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None  # none: every linear projection of the model
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    save_every: int = Field(100, ge=1)  # optimizer steps between checkpoints
    keep_checkpoints: int = Field(2, ge=1)
    progress: bool = True  # a progress bar on stderr

    @field_validator("r")
    @classmethod
    def _servable_rank(cls, r: int) -> int:
        if r not in VLLM_LORA_RANKS:
            raise ConfigError(f"training.r = {r}: vLLM serves only ranks {list(VLLM_LORA_RANKS)}; pick one")
        return r

    @property
    def time_budget_s(self) -> float | None:
        return self.time_budget_minutes * 60 if self.time_budget_minutes else None


class ServeConfig(Section):
    """The `[serve]` section of twin.toml. The API key is a secret: it comes from TWIN_VLLM_API_KEY, never here."""

    base_model: str | None = None  # a hub id or a local directory; none: the adapters' base (twin.json)
    served_model_name: str = "base"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    dtype: str = "auto"
    max_model_len: int | None = Field(None, gt=0)
    # Without it vLLM sizes the KV cache from --gpu-memory-utilization, which on the CPU backend means a
    # fraction of all RAM, and refuses to start when other processes hold too much of it.
    kv_cache_gib: float | None = Field(None, gt=0)
    max_loras: int = Field(4, ge=1)
    max_cpu_loras: int | None = Field(None, ge=1)
    max_lora_rank: int = Field(16, ge=1, le=512)
    chat_template: str | None = None
    prefix_caching: bool = True
    runtime_lora: bool = True
    python: str | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


class DraftingConfig(Section):
    """`twin draft`, `twin chat` and the bots: which backend, which adapter, how many candidates."""

    backend: Literal["auto", "vllm", "local"] = "auto"
    vllm_url: str | None = None  # default: the [serve] host and port
    adapter: str | None = None  # default: the newest adapter
    n: int = Field(3, ge=1, le=10)
    max_new_tokens: int = Field(96, ge=1)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    # No card for a burst the reply model (trained by `twin train`, beside the adapter) judges "no reply due";
    # they are counted in /status and the digest, and /draft <contact> asks for a card anyway.
    skip_no_reply: bool = True
    # The in-process model's projections on a CPU (drafts, and `twin eval`, which measures what drafts see):
    # "auto" is bf16 where the CPU has native bf16 units (AMX, AVX512-BF16), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"


class MemoryConfig(Section):
    """Memory (twin/memory.py): what drafting and training recall from earlier conversations."""

    enabled: bool = True
    # The memory block's budget in the prompt's tokens: about a quarter of [drafting]'s 896-token prompt.
    max_tokens: int = Field(224, ge=0)
    # "chat": only this chat's history. "owner" adds your own messages in other chats (never anyone else's).
    scope: Literal["chat", "owner"] = "chat"
    # "unicode61" (accents folded) suits most languages; "trigram" finds inflected forms (Russian, Finnish).
    tokenize: Literal["unicode61", "trigram"] = "unicode61"


class ContactConfig(Section):
    notes: str = ""


class TelegramConfig(Section):
    """The Telegram relay (`twin run`). The token is a secret: TWIN_TELEGRAM_TOKEN, never here."""

    owner_id: int | None = None  # the owner's Telegram user id: only it may approve drafts or give commands
    base_url: str = "https://api.telegram.org/bot"  # a self-hosted Bot API server: "http://127.0.0.1:8081/bot"
    settle_seconds: float = Field(3.0, ge=0)  # a burst of messages gets one draft, this long after its last
    pace_seconds: float = Field(1.0, ge=0)  # at least this long between two messages sent into one chat
    # Drafts expire this long before the 24-hour reply window closes (Bot API: can_reply covers private chats
    # with an incoming message in the last 24 hours).
    expiry_margin_minutes: float = Field(15, ge=0, lt=24 * 60)
    send_retries: int = Field(3, ge=0)  # a failed send is retried this often, with backoff, then reported
    # How long to wait for Telegram's answer to a request. A send answered later may still have arrived: it is
    # never repeated without asking you.
    read_timeout_seconds: float = Field(10.0, gt=0)
    digest_hour: int | None = Field(21, ge=0, le=23)  # the daily digest, local time; none: no digest
    # Store live messages from contacts for training too (off: they are only context for drafts).
    train_on_live: bool = False


class DiscordConfig(Section):
    """The twin's own Discord bot. The token is a secret: TWIN_DISCORD_TOKEN, never here."""

    users: dict[str, str] = Field(default_factory=dict)  # Discord user id -> contact (a name or platform:id)
    channels: list[str] = Field(default_factory=list)  # channel ids where it answers when mentioned
    approval: bool = False  # every reply goes to the owner's Telegram for approval first
    rate_limit_per_minute: int = Field(6, ge=1)  # replies per user per minute
    memory_messages: int = Field(20, ge=0)  # earlier messages of the conversation it remembers
    # Discord user ids whose mapped contact's notes ([contacts."Name"] notes) the twin may use when it answers
    # them. Off for everyone else: whatever is in the prompt, a user can ask the twin to repeat.
    share_notes: list[str] = Field(default_factory=list)

    @field_validator("share_notes")
    @classmethod
    def _shared_with_users(cls, ids: list[str], info: ValidationInfo) -> list[str]:
        users = info.data.get("users", {})
        for uid in ids:
            if uid not in users:
                raise ValueError(f"'{uid}' is not in discord.users; list only users the twin answers")
        return ids


class LearnConfig(Section):
    """`twin learn`: preference training on draft outcomes; `schedule` runs it from `twin run`."""

    schedule: str | None = None  # a cron expression ("0 4 * * *"); none: only by hand
    min_outcomes: int = Field(20, ge=1)  # new outcomes needed before a scheduled run trains
    method: Literal["auto", "dpo", "kto"] = "auto"
    beta: float = Field(0.1, gt=0)
    lr: float = Field(5e-5, gt=0)
    epochs: float = Field(2.0, gt=0)
    holdout_fraction: float = Field(0.2, ge=0, lt=1)  # the most recent outcomes, kept back for the gate
    batch_size: int = Field(8, ge=1)  # DPO rows (a pair or one of its anchors) or labelled replies (KTO) per step
    micro_batch: int = Field(4, ge=2)  # of them per forward pass; KTO needs two or more for its KL estimate
    # DPO plus this weight times the NLL of what went out (RPO, Pang et al. 2024): pure DPO lowers the likelihood
    # of the sent text too and drafts lose their fluency; 0 is plain DPO. KTO ignores it.
    sft_weight: float = Field(1.0, ge=0)


class Config(Section):
    owner: OwnerConfig = OwnerConfig()
    ingest: IngestConfig = IngestConfig()
    training: TrainingConfig = TrainingConfig()
    serve: ServeConfig = ServeConfig()
    drafting: DraftingConfig = DraftingConfig()
    contacts: dict[str, ContactConfig] = Field(default_factory=dict)
    telegram: TelegramConfig = TelegramConfig()
    discord: DiscordConfig = DiscordConfig()
    learn: LearnConfig = LearnConfig()
    memory: MemoryConfig = MemoryConfig()


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def load_config(path: Path) -> Config:
    """Read and validate twin.toml; a missing file is the default config."""
    if not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e}); check the file's permissions and encoding") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e}); fix the syntax or run `twin init --force`") from e
    try:
        return Config.model_validate(data)
    except ConfigError as e:  # a check of ours that pydantic passes through (training.r)
        raise ConfigError(f"{path}: {e}") from e
    except ValidationError as e:
        err = e.errors()[0]
        key = _where(err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{path}: unknown key '{key}'; remove it or check its spelling") from e
        raise ConfigError(f"{path}: key '{key}': {err['msg']} (got {err.get('input')!r})") from e


TEMPLATE = """\
# twin.toml: twin's configuration. Every key is optional; delete what you do not need.
# Secrets are never stored here: set TWIN_TELEGRAM_TOKEN, TWIN_DISCORD_TOKEN, TWIN_VLLM_API_KEY instead.

[owner]
# name = "Mira Solberg"            # how the twin refers to you
# telegram = ["user12345678"]     # your Telegram user id (a full export finds it by itself)
# discord = ["123456789012345678"]
# whatsapp = ["Mira"]             # WhatsApp has no ids: the name your own messages carry in its exports

[ingest]
# session_gap_minutes = 60        # a silence longer than this starts a new conversation
# include = []                    # also import: "saved", "bot", "channel", "public_group"

[training]
# base_model = "HuggingFaceTB/SmolLM2-1.7B-Instruct"   # a hub id, a local directory or a .gguf file
# name = "twin"                   # adapters are named <name>-v1, <name>-v2, ...
# max_tokens = 1024               # context per training sample
# epochs = 1
# time_budget_minutes = 30        # stop cleanly and save after this long
# lr = 2e-4
# r = 16                          # LoRA rank: 8, 16, 32, 64, 128, 256, 320 or 512 (what vLLM accepts)
# alpha = 32
# train_on = "owner"              # "all" also learns the contacts' turns (for role-play)
# scrub_pii = true                # replace emails, phone, card and IBAN numbers before training
# holdout_fraction = 0.1          # the most recent share of each chat's conversations, for `twin eval`
# max_memory_gb = 3               # default: what the machine has free; picks micro-batch and checkpointing
# precision = "auto"              # on a CPU: bf16 mixed precision where the CPU has it natively, else "fp32"

[serve]
# base_model = "..."              # default: the base your adapters were trained on
# host = "127.0.0.1"
# port = 8000
# max_loras = 4                   # adapters active in one batch
# kv_cache_gib = 4                # needed on CPU; on a GPU vLLM sizes it from --gpu-memory-utilization

[drafting]
# backend = "auto"                # auto: vLLM when it answers, else the in-process model
# adapter = "twin-v3"             # default: the newest adapter
# n = 3                           # candidates per draft
# temperature = 0.8
# skip_no_reply = true            # no card for "ok 👍", "thanks!": what you would not answer (see /status)
# precision = "auto"              # in-process on a CPU: bf16 where the CPU has it natively, else "fp32"

[memory]
# enabled = true                  # recall earlier conversations in drafts and training (format twin-chat v2)
# max_tokens = 224                # the memory block's share of the prompt
# scope = "chat"                  # "owner" also recalls your own messages in other chats, never anyone else's
# tokenize = "unicode61"          # "trigram" for languages with rich inflection (Russian); rebuilds the index

[telegram]
# owner_id = 123456789            # your Telegram user id (ask @userinfobot); only you can approve or command
# base_url = "http://127.0.0.1:8081/bot"   # a self-hosted Bot API server; default: api.telegram.org
# settle_seconds = 3              # wait this long after a contact's last message, then draft once
# expiry_margin_minutes = 15      # drafts expire this long before the 24-hour reply window closes
# digest_hour = 21                # the daily digest (local time)
# train_on_live = false           # contacts' live messages are context only, never training data

[discord]
# users = { "123456789012345678" = "Tomas Berg" }   # who may talk to the twin, and as which contact
# channels = ["234567890123456789"]                 # where it answers when mentioned
# approval = false                # true: every reply waits for your approval in Telegram
# rate_limit_per_minute = 6
# share_notes = []                # user ids whose contact's [contacts] notes the twin may use (and so repeat);
#                                 # for everyone else the notes stay out of its Discord replies

[learn]
# Learning from your edits trains on live chats: it needs [telegram] train_on_live = true.
# schedule = "0 4 * * *"          # run `twin learn` at 04:00 when enough new outcomes have accrued
# min_outcomes = 20               # usable outcomes (pairs for DPO, labelled replies for KTO) needed to train
# method = "auto"                 # dpo when you edited drafts, kto when you only sent or discarded them
# epochs = 2

# Notes about a contact, given to the twin when it writes to them (on Discord only for [discord] share_notes).
# [contacts."Tomas Berg"]
# notes = "climbing partner, we talk about routes and weekend trips"
"""
