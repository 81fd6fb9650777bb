"""The local transformers backend, end to end on tiny random-weight models saved to disk.

Tiny LLaVA and Video-LLaVA models (2-layer CLIP vision tower, 2-layer Llama, ~80k parameters) and
matching processors (a byte-level tokenizer built offline with the ``<image>``/``<video>`` special
tokens, CLIP-style image/video processors at 28 px) are saved with ``save_pretrained`` and loaded
back by local path, so the real ``from_pretrained`` → processor → ``generate`` path runs. Random
weights say nothing about answer quality; the tests check the plumbing: text back, batches in
order and equal to one-by-one answers, frames sampled as each model expects, option scores equal
to the log-likelihood computed the slow way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from privacy_lit.mllm.base import Request
from privacy_lit.mllm.transformers_backend import (
    TransformersMLLM,
    resolve_device,
    resolve_dtype,
    uniform_indices,
)

transformers = pytest.importorskip("transformers")

# LLaVA-1.5's chat template in miniature: the user turn lists the visual placeholders, then text.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'video' %}<video>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
SIZE = 28  # 2 × 2 patches of 14 px: 4 visual tokens per image or frame
NEW_TOKENS = 6
PROMPTS = ["What is happening?", "Describe the person.", "What sport is this, in one word?"]


def _configs(tokenizer: transformers.PreTrainedTokenizerFast) -> tuple[object, object]:
    vision = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=SIZE, patch_size=14,
    )  # fmt: skip
    text = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return vision, text


@pytest.fixture(scope="module")
def llava_dir(
    tmp_path_factory: pytest.TempPathFactory, byte_tokenizer: transformers.PreTrainedTokenizerFast
) -> Path:
    path = tmp_path_factory.mktemp("tiny-llava")
    vision, text = _configs(byte_tokenizer)
    config = transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_seq_length=4,
        image_token_index=byte_tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlavaForConditionalGeneration(config).save_pretrained(path)
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    transformers.LlavaProcessor(
        image_processor=image_processor, tokenizer=byte_tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def video_llava_dir(
    tmp_path_factory: pytest.TempPathFactory, byte_tokenizer: transformers.PreTrainedTokenizerFast
) -> Path:
    from transformers.models.video_llava.video_processing_video_llava import (
        VideoLlavaVideoProcessor,
    )

    path = tmp_path_factory.mktemp("tiny-video-llava")
    vision, text = _configs(byte_tokenizer)
    config = transformers.VideoLlavaConfig(
        vision_config=vision, text_config=text, image_seq_length=4, video_seq_length=8 * 5,
        image_token_index=byte_tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=byte_tokenizer.convert_tokens_to_ids("<video>"),
    )  # fmt: skip
    torch.manual_seed(1)
    transformers.VideoLlavaForConditionalGeneration(config).save_pretrained(path)
    sizes = {"size": {"shortest_edge": SIZE}, "crop_size": {"height": SIZE, "width": SIZE}}
    transformers.VideoLlavaProcessor(  # no chat template: the LLaVA prompt format is used
        image_processor=transformers.VideoLlavaImageProcessor(**sizes),
        video_processor=VideoLlavaVideoProcessor(**sizes), tokenizer=byte_tokenizer, patch_size=14,
    ).save_pretrained(path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def llava(llava_dir: Path) -> TransformersMLLM:
    backend = TransformersMLLM(str(llava_dir), device="cpu", max_new_tokens=NEW_TOKENS)
    backend.prepare()
    return backend


@pytest.fixture(scope="module")
def video_llava(video_llava_dir: Path) -> TransformersMLLM:
    backend = TransformersMLLM(str(video_llava_dir), device="cpu", max_new_tokens=NEW_TOKENS)
    backend.prepare()
    return backend


def _pixels(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, 3), dtype=torch.uint8, generator=generator)


# ----------------------------------------------------------------------------- LLaVA
def test_llava_loads_by_path_and_answers_a_batch_in_order(llava: TransformersMLLM) -> None:
    assert isinstance(llava._model, transformers.LlavaForConditionalGeneration)
    assert llava._dtype == torch.float32 and llava._device.type == "cpu"
    # images of different sizes and prompts of different lengths: left padding must hold
    requests = [Request(_pixels(40 + 8 * i, 50, seed=i), p) for i, p in enumerate(PROMPTS)]
    before = llava.stats.calls
    batched = llava.answer(requests)
    assert llava.stats.calls == before + 3
    assert all(isinstance(a.text, str) and a.option_scores is None for a in batched)
    assert any(a.text for a in batched)
    # one token is one byte: no more characters than new tokens, so no prompt text came back
    assert all(len(a.text) <= NEW_TOKENS for a in batched)
    one_by_one = [llava.answer([r])[0].text for r in requests]
    assert [a.text for a in batched] == one_by_one
    assert llava.stats.prompt_tokens > 0 and 0 < llava.stats.completion_tokens


def test_llava_prompt_comes_from_the_chat_template(llava: TransformersMLLM) -> None:
    assert llava._prompt_text("Why?", "image", 1) == "USER: <image>\nWhy? ASSISTANT:"


def test_image_model_given_a_video_sees_the_middle_frame_or_several(
    llava: TransformersMLLM, llava_dir: Path
) -> None:
    video = _pixels(9, 32, 32, seed=5)
    item = llava._item(Request(video, "q"))
    assert item.kind == "image" and len(item.visuals) == 1
    np.testing.assert_array_equal(np.asarray(item.visuals[0]), video[4].numpy())

    three = TransformersMLLM(str(llava_dir), device="cpu", image_frames=3, max_new_tokens=3)
    three.prepare()
    item = three._item(Request(video, "q"))
    assert len(item.visuals) == 3 and item.text.count("<image>") == 3
    np.testing.assert_array_equal(np.asarray(item.visuals[2]), video[8].numpy())
    assert isinstance(three.answer([Request(video, "q")])[0].text, str)


def test_any_image_text_to_text_model_loads_through_the_auto_class(llava_dir: Path) -> None:
    backend = TransformersMLLM(
        str(llava_dir), model_class="image_text_to_text", device="cpu", dtype="float32",
        max_new_tokens=3, prompt_template="Q: {visual} {prompt}\nA:",
    )  # fmt: skip
    answer = backend.answer([Request(_pixels(30, 30, seed=0), "What?")])
    assert isinstance(answer[0].text, str)
    assert backend._prompt_text("What?", "image", 1) == "Q: <image> What?\nA:"


def test_cache_identity_names_the_settings_and_close_reloads(llava_dir: Path) -> None:
    short = TransformersMLLM(str(llava_dir), device="cpu", max_new_tokens=3)
    longer = TransformersMLLM(str(llava_dir), device="cpu", max_new_tokens=4)
    assert short.cache_identity() != longer.cache_identity()
    identity = short.cache_identity()
    assert identity["model"] == str(llava_dir) and identity["dtype"] == "torch.float32"
    json.dumps(identity)  # a cache key must serialize
    request = Request(_pixels(30, 30, seed=4), "What?")
    first = short.answer([request])
    short.close()
    assert short._model is None
    assert short.answer([request]) == first  # prepared again on demand, same greedy answer


# ----------------------------------------------------------------------------- Video-LLaVA
def test_video_llava_samples_8_frames_and_answers_videos_and_images(
    video_llava: TransformersMLLM,
) -> None:
    assert isinstance(video_llava._model, transformers.VideoLlavaForConditionalGeneration)
    long_clip, short_clip = _pixels(16, 36, 40, seed=1), _pixels(5, 36, 40, seed=2)
    item = video_llava._item(Request(long_clip, "What is happening?"))
    assert item.kind == "video" and item.visuals[0].shape == (8, 36, 40, 3)
    np.testing.assert_array_equal(item.visuals[0][[0, -1]], long_clip[[0, 15]].numpy())
    assert item.text == "USER: <video>\nWhat is happening? ASSISTANT:"  # no chat template
    assert video_llava._item(Request(short_clip, "q")).visuals[0].shape[0] == 8

    requests = [
        Request(long_clip, PROMPTS[0]),
        Request(_pixels(30, 30, seed=3), PROMPTS[1]),  # an image, between two videos
        Request(short_clip, PROMPTS[2]),
    ]
    batched = video_llava.answer(requests)
    assert all(isinstance(a.text, str) and len(a.text) <= NEW_TOKENS for a in batched)
    assert [a.text for a in batched] == [video_llava.answer([r])[0].text for r in requests]


# ----------------------------------------------------------------------------- option scores
def _slow_log_likelihood(backend: TransformersMLLM, request: Request, option: str) -> float:
    """The reference: one forward over prompt + option (expanded sequence), prompt labels −100."""
    item = backend._item(request)
    processor, model = backend._processor, backend._model
    kind = "images" if item.kind == "image" else "videos"
    visuals = item.visuals if item.kind == "image" else item.visuals[:1]
    full = processor(text=[item.text + " " + option], return_tensors="pt", **{kind: visuals})
    prompt = processor(text=[item.text], return_tensors="pt", **{kind: visuals})
    labels = full["input_ids"].clone()
    labels[:, : prompt["input_ids"].shape[1]] = -100
    with torch.no_grad():
        loss = model(**full, labels=labels).loss
    return -float(loss) * int((labels != -100).sum())


@pytest.mark.parametrize("which", ["llava", "video_llava"])
def test_option_scores_are_the_log_likelihood_of_each_option(
    which: str, llava_dir: Path, video_llava_dir: Path
) -> None:
    options = ["riding a horse", "playing tennis", "swim"]
    path = llava_dir if which == "llava" else video_llava_dir
    # batch_size 2: the 3 options take two chunks, each with its own copy of the prompt cache
    backend = TransformersMLLM(
        str(path), mode="option_scores", options=options, device="cpu", batch_size=2
    )
    visual = _pixels(40, 40, seed=7) if which == "llava" else _pixels(8, 40, 40, seed=7)
    request = Request(visual, "What is the person doing?")
    [answer] = backend.answer([request])
    assert answer.option_scores is not None and list(answer.option_scores) == options
    assert all(math.isfinite(s) and s < 0 for s in answer.option_scores.values())
    assert answer.text == max(options, key=answer.option_scores.__getitem__)
    for option in options:
        slow = _slow_log_likelihood(backend, request, option)
        assert answer.option_scores[option] == pytest.approx(slow, rel=1e-4, abs=1e-4)
    assert backend.stats.calls == 1 and backend.stats.completion_tokens == 0


def test_length_normalized_option_scores(llava_dir: Path) -> None:
    options = ["a", "playing tennis"]
    kwargs = {"mode": "option_scores", "options": options, "device": "cpu"}
    summed = TransformersMLLM(str(llava_dir), **kwargs)
    mean = TransformersMLLM(str(llava_dir), length_normalize=True, **kwargs)
    request = Request(_pixels(32, 32, seed=0), "q")
    s, m = summed.answer([request])[0].option_scores, mean.answer([request])[0].option_scores
    assert s["a"] == pytest.approx(m["a"] * 2, rel=1e-5)  # " a": 2 tokens of 1 byte each
    assert s["playing tennis"] == pytest.approx(m["playing tennis"] * 15, rel=1e-5)


def test_bfloat16_the_gpu_default_runs_both_modes(llava_dir: Path) -> None:
    """bf16 is what ``dtype="auto"`` picks on a GPU; on the CPU it exercises the same casts."""
    request = Request(_pixels(30, 30, seed=2), "What?")
    generate = TransformersMLLM(str(llava_dir), device="cpu", dtype="bfloat16", max_new_tokens=3)
    assert isinstance(generate.answer([request])[0].text, str)
    assert generate._model.dtype == torch.bfloat16
    scores = TransformersMLLM(
        str(llava_dir), mode="option_scores", options=["run", "swim"], device="cpu",
        dtype="bfloat16",
    ).answer([request])[0].option_scores  # fmt: skip
    assert scores is not None and all(math.isfinite(v) for v in scores.values())


# ----------------------------------------------------------------------------- configuration
def test_frame_indices_are_uniform_and_middle_for_one() -> None:
    assert uniform_indices(16, 8) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert uniform_indices(9, 1) == [4]
    assert uniform_indices(3, 8) == [0, 0, 1, 1, 1, 1, 2, 2]


def test_device_and_dtype_strings() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    assert resolve_dtype("float16", cpu) == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("fp8", cpu)
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")


def test_bad_settings_fail_at_construction_and_loading_is_lazy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        TransformersMLLM("x", mode="option_scores", options=["run", "run"])
    with pytest.raises(ValueError, match="needs `options`"):  # PrivacySystem sets them in setup
        TransformersMLLM("x", mode="option_scores").answer(
            [Request(torch.zeros(8, 8, 3, dtype=torch.uint8), "q")]
        )
    with pytest.raises(ValueError, match="mode"):
        TransformersMLLM("x", mode="logits")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        TransformersMLLM("x", dtype="half")
    with pytest.raises(ValueError, match=r"\{visual\} and \{prompt\}"):
        TransformersMLLM("x", prompt_template="USER: {prompt} ASSISTANT:")
    with pytest.raises(ValueError, match="video_frames"):
        TransformersMLLM("x", video_frames=0)
    missing = TransformersMLLM(str(tmp_path / "nowhere"), local_files_only=True)  # no load yet
    with pytest.raises(OSError, match="could not load"):
        missing.prepare()
