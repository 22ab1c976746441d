"""`twin train`, `eval`, `learn` and `adapters`: making adapter versions and choosing the one that drafts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from twin.cli import Context, main, pass_ctx, table

from twin.errors import TwinError


@main.command()
@click.option("--base-model", help="A Hugging Face id, a local model directory or a .gguf file "
              "[config training.base_model; default: the embedded SmolLM2-135M-Instruct].")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Passes over the data [1].")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Stop cleanly after this many minutes and save what was learned.")
@click.option("--name", help="Adapter name; the result is <name>-v<N> [config training.name, twin].")
@click.option("--resume", is_flag=True, help="Continue the last unfinished run from its checkpoint.")
@click.option("--train-on", type=click.Choice(["owner", "all"]),
              help="Learn your turns only, or the contacts' too (role-play) [config training.train_on, owner].")
@click.option("--canaries", is_flag=True, help="Plant fake secrets 1, 4 and 16 times; `twin eval` reports leaks.")
@click.option("--eval/--no-eval", "run_eval", default=False, help="Evaluate on the held-out conversations after.")
@click.option("--only", type=click.Choice(["reply-model"]),
              help="Train only this part: reply-model, the classifier of when no reply is due (seconds, no GPU), "
                   "saved beside the default adapter.")
@pass_ctx
def train(ctx: Context, base_model, max_steps, epochs, time_budget, name, resume, train_on, canaries,
          run_eval, only) -> None:
    """Train a LoRA adapter in your voice on the stored conversations.

    The most recent 10% of each chat's conversations are held out for `twin eval`. Beside the adapter goes a
    small classifier of when no reply is due (no card for "ok 👍"), learned from when you replied. The last
    line printed is the adapter directory.

    \b
    Example:
        twin train --time-budget 5 --eval
        twin train --base-model Qwen/Qwen2.5-1.5B-Instruct --epochs 2
        twin train --only reply-model
    """
    if only == "reply-model":
        from twin.cli.parts import pick_adapter

        adapter = pick_adapter(ctx.home, ctx.config.drafting.adapter)
        where = adapter.path if adapter else ctx.home.adapters / "base"
        click.echo(train_reply_model(ctx, where, sys.stderr))
        return
    from training.dataset import DatasetOptions
    from training.job import TrainRequest, train_adapter

    cfg = ctx.config
    req = TrainRequest(base_model=base_model, name=name, max_steps=max_steps, epochs=epochs,
                       time_budget_minutes=time_budget, resume=resume, canaries=canaries, train_on=train_on)
    data = DatasetOptions.from_config(cfg.training, cfg.ingest, cfg.owner, cfg.contacts, cfg.telegram, cfg.memory)
    path = train_adapter(ctx.home, cfg.training, data, req, echo=lambda m: click.echo(m, err=True))
    try:
        train_reply_model(ctx, path, sys.stderr)
    except TwinError as e:  # the adapter is made; drafting works without the classifier (a card for every burst)
        click.echo(f"warning: no reply model: {e}", err=True)
    if run_eval:
        _eval(ctx, str(path), as_json=False, limit=64, out=sys.stderr)
    click.echo(path)


@main.command("eval")
@click.argument("adapter", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--limit", type=click.IntRange(min=1), default=64, show_default=True,
              help="Held-out conversations to generate replies for.")
@click.option("--fresh", is_flag=True,
              help="Compute the base model's side again, even where an earlier eval on the same data has it.")
@pass_ctx
def eval_(ctx: Context, adapter: str | None, as_json: bool, limit: int, fresh: bool) -> None:
    """Compare an adapter with its base model on held-out conversations (default: the newest adapter).

    The base model's side is reused from an earlier eval of the same base on the same held-out data with the
    same options (it does not depend on the adapter); --fresh computes it again.

    \b
    Example:
        twin eval twin-v2 --json
    """
    _eval(ctx, adapter, as_json, limit, sys.stdout, fresh)


def train_reply_model(ctx: Context, directory: Path, out) -> Path:
    """Fit the no-reply classifier on the store (and the draft outcomes) and save it in `directory`; prints its
    held-out numbers. Raises TwinError when the history has nothing to learn it from."""
    from bot.ledger import Ledger
    from training.reply_model import train_reply_model as fit

    cfg = ctx.config
    with ctx.existing_store() as store:
        try:
            model = fit(store, cfg.training.holdout_fraction, int(cfg.ingest.session_gap_minutes * 60),
                        cfg.telegram.train_on_live, Ledger(store).outcomes())
        except ValueError as e:
            raise TwinError(f"{ctx.home.db}: {e}") from None
    model.save(directory)
    held = model.metrics["held_out"]
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    click.echo(f"reply model: {model.metrics['fit_bursts']} bursts fitted; on {held['bursts']} held-out bursts "
               f"({held['no_reply_bursts']} unanswered) precision {pct(held['precision'])}, recall "
               f"{pct(held['recall'])}, cards saved {pct(held['saved_share'])} at threshold {model.threshold:.2f}",
               file=out)
    return directory


def reply_model_eval(ctx: Context, adapter_dir: Path | None) -> dict | None:
    """`twin eval`'s `reply_model` block: the saved classifier scored on the held-out conversations; None
    without one."""
    from training.reply_model import evaluate_saved
    from twin.replies import ReplyModel, find_model

    where = find_model(ctx.home.adapters, adapter_dir.name if adapter_dir else None)
    if where is None:
        return None
    cfg = ctx.config
    with ctx.existing_store() as store:
        return evaluate_saved(store, ReplyModel.load(where), cfg.training.holdout_fraction,
                              int(cfg.ingest.session_gap_minutes * 60), cfg.telegram.train_on_live)


def _eval(ctx: Context, adapter: str | None, as_json: bool, limit: int, out, fresh: bool = False) -> None:
    from training.evaluation import EvalOptions, evaluate, format_table

    results = evaluate(ctx.home, ctx.config, adapter, EvalOptions(limit=limit), fresh=fresh)
    results["reply_model"] = reply_model_eval(ctx, ctx.home.adapters / results["name"])
    if as_json:
        click.echo(json.dumps(results, indent=2), file=out)
        return
    click.echo(f"{results['name']}: {results['held_out']['samples']} held-out conversations, "
               f"{results['held_out']['replies']} replies generated", file=out)
    table(["metric", "base", "adapter"], format_table(results), out)
    if results["base_from"]:
        click.echo(f"base column reused from {results['base_from']}'s eval (same base, held-out data and options; "
                   "--fresh computes it again)", file=out)
    if rm := results["reply_model"]:
        click.echo(f"reply model: {rm['bursts']} held-out bursts, precision {rm['precision']}, recall "
                   f"{rm['recall']}, cards saved {rm['saved_share']} at threshold {rm['threshold']:.2f}", file=out)
    click.echo(f"chart: {results['chart']}", file=out)


@main.command("learn")
@click.option("--adapter", help="The version to improve [default: the default adapter; see `twin adapters`].")
@click.option("--method", type=click.Choice(["auto", "dpo", "kto"]),
              help="DPO on pairs, KTO on single verdicts; auto: DPO when there are pairs [learn.method, auto].")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True),
              help="Passes over the outcomes [learn.epochs, 2].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one line of JSON.")
@click.option("--dry-run", is_flag=True, help="Count what there is to learn from; train nothing.")
@pass_ctx
def learn_(ctx: Context, adapter, method, epochs, as_json: bool, dry_run: bool) -> None:
    """Learn from what you did with the drafts: a new adapter version, kept only if it is better.

    What you sent after editing a draft is preferred over the draft, an approved candidate over the ones you
    skipped or discarded (trivial edits do not count). The adapter is trained further on that and checked on
    your most recent outcomes, which it did not learn from, and on held-out conversations: it becomes the
    default (and is loaded into a running vLLM) only if its drafts come closer to what you sent and its style
    is no worse. Otherwise it stays on disk for `twin adapters use`. The last line printed is its directory.

    \b
    Example:
        twin learn --dry-run
        twin learn --method dpo --epochs 3
    """
    from training.gate import format_table
    from training.learn import LearnRequest, learn

    from bot.ledger import Ledger

    with ctx.existing_store() as store:
        found = Ledger(store).outcomes()
    result = learn(ctx.home, ctx.config, found, LearnRequest(adapter, method, epochs, dry_run),
                   echo=lambda m: click.echo(m, err=True))
    if dry_run:
        if as_json:
            click.echo(json.dumps(result.to_json()))
            return
        table(["draft outcomes", "count"], sorted(result.counts.items()))
        click.echo(f"would train {result.parent} with {result.method.upper()} on {result.counts['usable']} outcomes")
        return
    try:  # the new version's reply model learns the "No reply needed" taps too
        train_reply_model(ctx, result.path, sys.stderr)
    except TwinError as e:
        click.echo(f"warning: no reply model for {result.name}: {e}", err=True)
    vllm = _load_into_vllm(ctx, result.name, result.path) if result.promoted else None
    if as_json:
        click.echo(json.dumps({**result.to_json(), "vllm": vllm}))
        return
    table(["gate", result.parent, result.name, "verdict"], format_table(result.gate), sys.stderr)
    if result.promoted:
        click.echo(f"promoted: {result.name} is the default adapter now ({result.parent} stays for "
                   f"`twin adapters use {result.parent}`)", err=True)
        click.echo(vllm, err=True)
    else:
        click.echo(f"not promoted: {'; '.join(result.gate['reasons'])}. {result.parent} stays the default",
                   err=True)
    click.echo(result.path)


@main.group("adapters", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def adapters_(click_ctx: click.Context, as_json: bool) -> None:
    """The adapter versions on disk: base, when made, from which parent, the gate's decision, the default.

    \b
    Example:
        twin adapters
        twin adapters use twin-v2
    """
    if click_ctx.invoked_subcommand:
        return
    from twin import adapters

    ctx = click_ctx.find_object(Context)
    found = adapters.list_adapters(ctx.home.adapters)
    pinned = ctx.config.drafting.adapter
    default = pinned or (adapters.find_adapter(ctx.home.adapters, None).name if found else None)
    rows = []
    for a in found:
        meta = a.meta
        rows.append({"name": a.name, "path": str(a.path), "base_model": meta.get("base_model"),
                     "created_at": meta.get("created_at"), "parent": meta.get("parent"),
                     "gate": (meta.get("gate") or {}).get("decision"), "default": a.name == default})
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no adapters yet in {ctx.home.adapters}; run `twin train` first")
        return
    table(["name", "base", "created", "parent", "gate", "default"],
           [(r["name"], r["base_model"] or "-", r["created_at"] or "-", r["parent"] or "-", r["gate"] or "-",
             "*" if r["default"] else "") for r in rows])
    if pinned:
        click.echo(f"(twin.toml drafting.adapter = {pinned!r} chooses the default)")


@adapters_.command("use")
@click.argument("name")
@pass_ctx
def adapters_use(ctx: Context, name: str) -> None:
    """Make NAME the adapter that drafts (also to roll back), until a newer one is trained or promoted.

    Loads it into a running vLLM when one answers at the configured URL.

    \b
    Example:
        twin adapters use twin-v2
    """
    from twin import adapters

    chosen = adapters.set_default(ctx.home.adapters, name)
    click.echo(f"{chosen.name} is the default adapter now")
    click.echo(_load_into_vllm(ctx, chosen.name, chosen.path), err=True)
    pinned = ctx.config.drafting.adapter
    if pinned and pinned != chosen.name:
        click.echo(f"note: twin.toml drafting.adapter = {pinned!r} still chooses what drafts; remove it to draft "
                   f"with {chosen.name}", err=True)


def _load_into_vllm(ctx: Context, name: str, path: Path) -> str:
    """Load an adapter into the vLLM server at the configured URL, if one answers; says what happened. A server
    that is not there, or refuses, is a warning: `twin serve` loads every adapter when it starts."""
    import os

    from twin.cli.parts import vllm_url
    from serving.openai_api import OpenAIClient

    url = vllm_url(ctx.config)
    with OpenAIClient(url, api_key=os.environ.get("TWIN_VLLM_API_KEY"), timeout=60, retries=1) as client:
        if not client.health():
            return f"no vLLM answering at {url}: `twin serve` loads {name} when it starts"
        try:
            if name not in client.models():
                client.load_lora(name, str(path))
        except TwinError as e:
            return f"warning: vLLM at {url} did not load {name} ({e}); restart `twin serve` to serve it"
    return f"vLLM at {url} serves {name}"
