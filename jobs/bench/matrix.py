"""The benchmark matrix: which configurations run, on which model pair, and derived ratios."""
from __future__ import annotations

import gc

import torch

from workers.text.tokenizer import TokenizerBundle
from .hf_baseline import hf_model, hf_sequential_decode
from .measure import Case, floor_seconds, run_engine_case
from .shapes import MASK_TOKEN_ID, make_agree, random_model, weight_bytes

VANILLA = [("vanilla", "sequential", ""), ("vanilla", "static", ""), ("vanilla", "dynamic", "")]
SIMSD = [("simsd", "sequential", "paper"), ("simsd", "sequential", "exact")]
# (decoder, remasking, verify, draft kind, adaptive, draft remasking, denoising steps): lossless SimSD variants
ADAPTIVE = [("simsd", "sequential", "exact", "sdar", "on", "static"),
            ("simsd", "sequential", "exact", "sdar", "off", "dynamic"),
            ("simsd", "sequential", "exact", "sdar", "off", "static", 2),
            ("simsd", "sequential", "exact", "sdar", "on", "static", 2)]
AGREE = "+agree"  # a pair name ending in this: weights made to agree (SimSD accepts every draft)


def shape_plan(plan: str) -> list[tuple[str, int, list[int], list[tuple]]]:
    """(pair, block length, batch sizes, decoders) for the random-weight pairs."""
    if plan == "quick":
        return [("sdar-1.7b-shape", 4, [1], [("hf", "", "")] + VANILLA[:1]),
                ("sdar-4b-shape", 4, [8], VANILLA[1:2] + SIMSD)]
    if plan in ("reference", "reference-b1"):
        return []
    return [
        ("sdar-1.7b-shape", 4, [1], [("hf", "", "")] + VANILLA[:1]),
        ("sdar-8b-shape", 4, [1], [("hf", "", "")]),
        ("sdar-8b-shape", 4, [1, 16, 64], VANILLA + SIMSD + ADAPTIVE),
        ("sdar-8b-shape" + AGREE, 4, [1, 16, 64], VANILLA[:1] + SIMSD[1:] + ADAPTIVE),
        ("sdar-8b-shape", 8, [1, 16], VANILLA[:1] + SIMSD),
        ("sdar-4b-shape", 4, [1, 32, 128], VANILLA + SIMSD),
    ]


def reference_plan(plan: str) -> list[tuple[int, list[int], list[tuple]]]:
    ar = [("simsd", "sequential", "paper", "ar"), ("simsd", "sequential", "exact", "ar")]
    if plan == "quick":
        return [(4, [1], VANILLA + SIMSD + ar[:1])]
    if plan == "shapes":
        return []
    if plan == "reference-b1":
        return [(4, [1], VANILLA + SIMSD + ADAPTIVE)]
    return [(4, [1, 8, 32], VANILLA + SIMSD + ADAPTIVE + ar), (8, [1], VANILLA[:1] + SIMSD)]


def run_matrix(args, pairs: dict, reference_dir, log, save=lambda records: None) -> list[dict]:
    device = torch.device(args.device)
    records = []
    loaded: dict[str, torch.nn.Module] = {}
    for pair, block, batches, decoders in shape_plan(args.plan):
        target_shape, draft_shape = pairs[pair.removesuffix(AGREE)]
        agree = pair.endswith(AGREE)
        _keep(loaded, {_key(target_shape, agree), _key(draft_shape, agree)} - {None})
        target = _get(loaded, target_shape, device, agree)
        draft = _get(loaded, draft_shape, device, agree) if draft_shape else None
        tok = TokenizerBundle(tokenizer=None, stop_ids=())  # random weights: no stops, fixed lengths
        for batch in batches:
            g = torch.Generator().manual_seed(batch)
            prompts = [torch.randint(0, 150000, (args.prompt_len,), generator=g).tolist() for _ in range(batch)]
            for spec in decoders:
                case = _case(pair, spec, batch, block)
                rec = _run_case(case, target, draft, tok, prompts, args, device)
                records.append(rec)
                log(_line(rec))
                save(derive(records))
    loaded.clear()
    _free()
    if reference_plan(args.plan) and not (reference_dir / "target").is_dir():
        log(f"no reference family under {reference_dir}: skipped")
    elif reference_plan(args.plan):
        records += run_reference(args, reference_dir, device, log, lambda recs: save(derive(records + recs)))
    return derive(records)


def _case(pair: str, spec: tuple, batch: int, block: int) -> Case:
    """A Case from a plan's (decoder, remasking, verify[, draft kind[, adaptive[, draft remasking[, steps]]]])."""
    decoder, remasking, verify, *given = spec
    kind, adaptive, draft_rule, steps = (*given, *("sdar", "off", "static", None)[len(given):])
    return Case(pair, decoder, remasking, verify, kind, batch, block, adaptive=adaptive, draft_remasking=draft_rule,
                denoising_steps=steps)


def _run_case(case: Case, target, draft, tok, prompts, args, device) -> dict:
    rec = {**case.__dict__, "label": case.label, "num_prompts": len(prompts)}
    if case.decoder == "hf":
        model = hf_model(target.config, device)
        rec.update(hf_sequential_decode(model, args.prompt_len, args.max_new, case.block_length, MASK_TOKEN_ID, device))
        rec["tokens_per_s"] = rec["tokens"] / rec["decode_s"]
        rec["tokens_per_s_e2e"] = rec["tokens"] / rec["wall_s"]
        rec["ms_per_round"] = 1e3 * rec["decode_s"] / rec["steps"]
        del model
        _free()
    else:
        rec.update(run_engine_case(case, target, draft if case.decoder == "simsd" else None, tok, prompts, args.max_new))
    _add_floor(rec, target, draft if case.decoder == "simsd" else None)
    return rec


def _add_floor(rec: dict, target, draft) -> None:
    floor = floor_seconds(weight_bytes(target), target.config.num_params,
                          rec.get("target_query_tokens", rec.get("target_forwards", 0) * rec["block_length"]),
                          rec.get("target_forwards", 0))
    if draft is not None:
        floor += floor_seconds(weight_bytes(draft), draft.config.num_params, rec.get("draft_query_tokens", 0),
                               rec.get("draft_forwards", 0))
    rec["floor_s"] = floor
    rec["floor_ratio"] = rec["decode_s"] / floor if floor else None
    rec["ms_per_target_forward"] = 1e3 * rec["decode_s"] / max(rec.get("target_forwards", 1), 1)


def run_reference(args, reference_dir, device, log, save=lambda records: None) -> list[dict]:
    from pipeline.reference_data import extract_answer, heldout_problems

    from workers.models import load_model
    from workers.text.tokenizer import load_tokenizer

    tok = load_tokenizer(reference_dir / "target")
    target = load_model(reference_dir / "target", device, "auto")
    drafts = {"sdar": load_model(reference_dir / "draft", device, "auto")}
    if (reference_dir / "draft-ar").is_dir():
        drafts["ar"] = load_model(reference_dir / "draft-ar", device, "auto")
    records = []
    for block, batches, decoders in reference_plan(args.plan):
        for batch in batches:
            n = max(batch, args.reference_problems if batch > 1 else min(16, args.reference_problems))
            problems = heldout_problems(n)
            prompts = [tok.encode_prompt(q) for q, _ in problems]
            for spec in decoders:
                case = _case("reference", spec, batch, block)
                if case.draft_kind not in drafts:
                    continue
                draft = drafts[case.draft_kind] if case.decoder == "simsd" else None
                rec = {**case.__dict__, "label": case.label, "num_prompts": n}
                rec.update(run_engine_case(case, target, draft, tok, prompts, 256, keep_results=True))
                texts = [tok.decode(r.token_ids) for r in rec.pop("results")]
                rec["accuracy"] = sum(extract_answer(t) == a for t, (_, a) in zip(texts, problems)) / n
                _add_floor(rec, target, draft)
                records.append(rec)
                log(_line(rec))
                save(records)
    return records


def derive(records: list[dict]) -> list[dict]:
    """speedup_vs_hf and speedup_vs_vanilla_sequential within the same pair, batch and block."""
    def key(r):
        return (r["model_pair"], r["batch_size"], r["block_length"])
    hf = {key(r): r["tokens_per_s"] for r in records if r["decoder"] == "hf"}
    seq = {key(r): r["tokens_per_s"] for r in records if r["label"] == "vanilla-sequential"}
    for r in records:
        r["speedup_vs_hf"] = r["tokens_per_s"] / hf[key(r)] if key(r) in hf else None
        r["speedup_vs_vanilla_sequential"] = r["tokens_per_s"] / seq[key(r)] if key(r) in seq else None
    return records


def _line(r: dict) -> str:
    acc = f" acc={r['accuracy']:.3f}" if "accuracy" in r else ""
    fr = f" floor x{r['floor_ratio']:.2f}" if r.get("floor_ratio") else ""
    return (f"{r['model_pair']:>16} B={r['block_length']} bs={r['batch_size']:>3} {r['label']:<20} "
            f"{r['tokens_per_s']:9.1f} tok/s  {r['ms_per_round']:7.2f} ms/round  "
            f"acc/round={r.get('mean_accepted_per_round', 0) or 0:.2f}{fr}{acc}")


def _key(shape, agree: bool):
    return None if shape is None else shape + (AGREE if agree else "")


def _get(loaded, shape, device, agree: bool = False):
    key = _key(shape, agree)
    if key not in loaded:
        model = random_model(shape, device)
        loaded[key] = make_agree(model) if agree else model
    return loaded[key]


def _keep(loaded, names) -> None:
    for name in list(loaded):
        if name not in names:
            del loaded[name]
    _free()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
