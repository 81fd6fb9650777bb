"""A local Hugging Face transformers MLLM as the black box: LLaVA-1.5, Video-LLaVA, and any
``AutoModelForImageTextToText`` model (e.g. Qwen2.5-VL), by hub id or local path.

The paper deploys Video-LLaVA (actions) and LLaVA-1.5 (VQA) locally and treats them as black
boxes: pixels and a prompt go in, text comes out. :class:`TransformersMLLM` does exactly that in
its default ``mode="generate"``: batched greedy generation (left padding, so every prompt ends
where generation starts), only the new tokens decoded.

Frames. A request's video (``T × H × W × 3`` uint8) is sampled the way each model expects:
models whose processor takes videos (Video-LLaVA, Qwen2-VL family) get ``video_frames`` frames
spaced uniformly over the clip (Video-LLaVA was trained on exactly 8); image-only models (LLaVA-1.5)
get the middle frame, or ``image_frames`` uniformly spaced frames as that many images.

Prompt. ``prompt_template`` when given; else the processor's chat template when it has one (a
user turn with the visual placeholders then the question, plus the generation prompt); else the
LLaVA-1.5 / Video-LLaVA format ``"USER: <image>\\n{question} ASSISTANT:"``.

``mode="option_scores"`` is NOT black-box. It scores each of ``options`` (the class names) by its
log-likelihood given the visual input and prompt — it reads the model's logits, which a cloud API
does not give. It is for users who run a model locally anyway and want a cheaper, lower-variance
utility loss than open-ended answers scored by retrieval: no generation, and the loss changes
smoothly with the pixels instead of jumping when a greedy answer flips. The prompt is run once
(its key/value cache is reused for every option), so K options cost about one prompt forward plus
K short continuations. ``Answer.text`` is then the best option and ``Answer.option_scores`` holds
every option's (summed, or with ``length_normalize`` per-token mean) log-likelihood; the
retrieval scorer uses those scores as logits when it is handed the :class:`Answer` objects.

Usage (YAML: ``conf/llava.yaml``, ``conf/video_llava.yaml``)::

    mllm = TransformersMLLM("LanguageBind/Video-LLaVA-7B-hf")
    mllm.answer([Request(clip_uint8_THW3, "What is the person doing?")])[0].text
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from privacy_lit.mllm.base import Answer, BlackBoxMLLM, Request

log = logging.getLogger(__name__)

Mode = Literal["generate", "option_scores"]
ModelClass = Literal["auto", "llava", "video_llava", "image_text_to_text"]
VideoInput = Literal["auto", "video", "frames"]
Kind = Literal["image", "video"]

LLAVA_TEMPLATE = "USER: {visual}\n{prompt} ASSISTANT:"
"""LLaVA-1.5's and Video-LLaVA's prompt format (used when the processor has no chat template)."""

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is the GPU when there is one; otherwise ``device`` as given (``"cuda:1"``).

    A GPU without an index (``"auto"``, ``"cuda"``) is the *current* one, resolved when the model
    is loaded: under DDP Lightning makes each rank's own GPU current before ``setup`` prepares the
    black box, so every rank loads its copy of the model on its own device. An explicit index
    puts every rank's copy on that one GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} was asked for, but torch sees no CUDA device")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on a GPU (how the 7B models are served), float32 on the CPU (where
    half precision is slow or unsupported)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def uniform_indices(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread uniformly over ``num_frames`` (first and last included;
    repeated when the clip is shorter); ``count == 1`` is the middle frame."""
    if count == 1:
        return [num_frames // 2]
    return np.linspace(0, num_frames - 1, count).round().astype(int).tolist()


@dataclass(frozen=True)
class _Item:
    """One request made ready for the processor."""

    kind: Kind
    visuals: list[Any]  # PIL images (kind "image") or one T×H×W×3 uint8 array (kind "video")
    text: str  # the full prompt, visual placeholders included


class TransformersMLLM(BlackBoxMLLM):
    """A local transformers MLLM behind the black-box interface (module docstring says how).

    Args:
        model: hub id or local directory (weights and processor).
        model_class: ``"auto"`` picks LLaVA / Video-LLaVA from the config's ``model_type`` and
            ``AutoModelForImageTextToText`` for everything else.
        mode: ``"generate"`` (black box) or ``"option_scores"`` (needs logits; not black box).
        options: the class names scored in ``"option_scores"`` mode (the scorer's class texts).
        option_template: how an option continues the prompt (``"{option}"`` placeholder);
            None: the option after one space, unless the prompt already ends in whitespace.
        length_normalize: score options by mean instead of summed token log-likelihood.
        device, dtype: ``"auto"`` | ``"cuda"`` | ``"cpu"`` | ...; ``"auto"`` | ``"bfloat16"`` |
            ``"float16"`` | ``"float32"`` (auto: bf16 on GPU, fp32 on CPU).
        batch_size: requests per forward (generation) or options per forward (option scores).
        max_new_tokens, do_sample, temperature: generation; greedy by default, because sampling
            noise would enter the zeroth-order gradient estimate as extra variance.
        video_frames: frames given to a video model (Video-LLaVA: 8).
        image_frames: frames given to an image-only model for a video (1: the middle frame).
        video_input: ``"auto"`` (video if the processor takes videos), ``"video"`` or
            ``"frames"`` (always send frames as images).
        prompt_template: overrides the chat template; ``{visual}`` and ``{prompt}`` placeholders.
        system_prompt: optional system turn (or prefix, with a plain template).
        revision, local_files_only, trust_remote_code, attn_implementation: ``from_pretrained``.
    """

    def __init__(
        self,
        model: str = "llava-hf/llava-1.5-7b-hf",
        model_class: ModelClass = "auto",
        mode: Mode = "generate",
        options: list[str] | None = None,
        option_template: str | None = None,
        length_normalize: bool = False,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        video_frames: int = 8,
        image_frames: int = 1,
        video_input: VideoInput = "auto",
        prompt_template: str | None = None,
        system_prompt: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
    ):
        super().__init__()
        _check_choice("model_class", model_class, ModelClass)
        _check_choice("mode", mode, Mode)
        _check_choice("video_input", video_input, VideoInput)
        counts = {"batch_size": batch_size, "max_new_tokens": max_new_tokens,
                  "video_frames": video_frames, "image_frames": image_frames}  # fmt: skip
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if options is not None:  # None: PrivacySystem fills in the data's class names
            if any(not o.strip() for o in options):
                raise ValueError("`options` must be non-empty class names")
            if len(set(options)) != len(options):
                raise ValueError("`options` must be distinct")
        if option_template is not None and "{option}" not in option_template:
            raise ValueError(
                f"option_template needs an {{option}} placeholder: {option_template!r}"
            )
        if prompt_template is not None:
            try:
                prompt_template.format(visual="<image>", prompt="q")
            except (KeyError, IndexError) as err:
                raise ValueError(
                    f"prompt_template may only use {{visual}} and {{prompt}}: {prompt_template!r}"
                ) from err
            if "{visual}" not in prompt_template or "{prompt}" not in prompt_template:
                raise ValueError(
                    f"prompt_template needs {{visual}} and {{prompt}}: {prompt_template!r}"
                )
        resolve_dtype(dtype, torch.device("cpu"))  # fail on a typo now, not after loading
        self.model_name, self.model_class, self.mode = model, model_class, mode
        self.options = list(options or [])
        self.option_template, self.length_normalize = option_template, length_normalize
        self.device, self.dtype = device, dtype
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.do_sample, self.temperature = do_sample, temperature
        self.video_frames, self.image_frames = video_frames, image_frames
        self.video_input = video_input
        self.prompt_template, self.system_prompt = prompt_template, system_prompt
        self._load_kwargs: dict[str, Any] = {
            "revision": revision,
            "local_files_only": local_files_only,
            "trust_remote_code": trust_remote_code,
        }
        self.attn_implementation = attn_implementation
        self._model: Any = None
        self._processor: Any = None
        self._device = torch.device("cpu")
        self._dtype = torch.float32
        self._takes_video = False

    # ----------------------------------------------------------------------------- loading
    def prepare(self) -> None:
        """Load processor and model once (lazily: constructing the backend from a config must not
        pull 14 GB of weights)."""
        if self._model is not None:
            return
        from transformers import AutoConfig, AutoProcessor

        kwargs = {k: v for k, v in self._load_kwargs.items() if v is not None}
        try:
            config = AutoConfig.from_pretrained(self.model_name, **kwargs)
            processor = AutoProcessor.from_pretrained(self.model_name, **kwargs)
        except OSError as err:
            raise OSError(
                f"could not load {self.model_name!r}: neither a local model directory nor a hub "
                f"id that is cached or downloadable here ({err})"
            ) from err
        if not hasattr(processor, "tokenizer"):
            raise TypeError(
                f"{self.model_name}: AutoProcessor gave {type(processor).__name__}, expected a "
                "multimodal processor with a tokenizer"
            )
        has_video = getattr(processor, "video_processor", None) is not None
        if self.video_input == "video" and not has_video:
            raise ValueError(f"video_input='video', but {type(processor).__name__} takes no videos")
        takes_video = has_video and self.video_input != "frames"
        if config.model_type == "video_llava" and takes_video and self.video_frames != 8:
            log.warning("Video-LLaVA was trained on 8 frames per video; video_frames=%d",
                        self.video_frames)  # fmt: skip
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"  # batched generation: every prompt ends at the same place
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        model_kwargs = dict(kwargs, dtype=dtype)
        if self.attn_implementation is not None:
            model_kwargs["attn_implementation"] = self.attn_implementation
        model_cls = _model_class(self.model_class, config.model_type)
        model = model_cls.from_pretrained(self.model_name, **model_kwargs)
        # assigned last: a failure above leaves the backend unprepared, not half-prepared
        self._device, self._dtype, self._takes_video = device, dtype, takes_video
        self._processor = processor
        self._model = model.to(device).eval().requires_grad_(False)

    def close(self) -> None:
        """Drop model and processor (GPU memory back); :meth:`prepare` loads them again."""
        self._model = self._processor = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def cache_identity(self) -> dict[str, object]:
        """Everything besides the request that decides the answer (the response-cache key):
        the precision too, since bf16 and fp32 greedy decoding can part ways."""
        try:
            dtype = str(resolve_dtype(self.dtype, resolve_device(self.device)))
        except RuntimeError:  # cuda asked for, none here: prepare() will say so
            dtype = self.dtype
        return {
            **super().cache_identity(),
            "model": self.model_name,
            "revision": self._load_kwargs["revision"],
            "model_class": self.model_class,
            "dtype": dtype,
            "mode": self.mode,
            "options": self.options if self.mode == "option_scores" else None,
            "option_template": self.option_template,
            "length_normalize": self.length_normalize,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "temperature": self.temperature if self.do_sample else None,
            "video_frames": self.video_frames,
            "image_frames": self.image_frames,
            "video_input": self.video_input,
            "prompt_template": self.prompt_template,
            "system_prompt": self.system_prompt,
        }

    # ----------------------------------------------------------------------------- requests
    def _prompt_text(self, prompt: str, kind: Kind, count: int) -> str:
        processor = self._processor
        if self.prompt_template is None and getattr(processor, "chat_template", None):
            content = [{"type": kind} for _ in range(count)] + [{"type": "text", "text": prompt}]
            conversation = [{"role": "user", "content": content}]
            if self.system_prompt:
                system = [{"type": "text", "text": self.system_prompt}]
                conversation.insert(0, {"role": "system", "content": system})
            return processor.apply_chat_template(conversation, add_generation_prompt=True)
        token = getattr(processor, f"{kind}_token", None) or f"<{kind}>"
        text = (self.prompt_template or LLAVA_TEMPLATE).format(
            visual="\n".join([token] * count), prompt=prompt
        )
        return f"{self.system_prompt} {text}" if self.system_prompt else text

    def _item(self, request: Request) -> _Item:
        pixels = request.visual.cpu().numpy()
        if pixels.ndim == 3:
            return _Item(
                "image", [Image.fromarray(pixels)], self._prompt_text(request.prompt, "image", 1)
            )
        if self._takes_video:
            frames = np.ascontiguousarray(pixels[uniform_indices(len(pixels), self.video_frames)])
            return _Item("video", [frames], self._prompt_text(request.prompt, "video", 1))
        images = [
            Image.fromarray(pixels[i]) for i in uniform_indices(len(pixels), self.image_frames)
        ]
        return _Item("image", images, self._prompt_text(request.prompt, "image", len(images)))

    def _inputs(self, items: Sequence[_Item]) -> dict[str, Tensor]:
        """Processor outputs for items of one kind, on the model's device, floats in its dtype."""
        kwargs: dict[str, Any] = {"text": [it.text for it in items], "padding": True,
                                  "return_tensors": "pt"}  # fmt: skip
        if items[0].kind == "image":
            kwargs["images"] = [image for it in items for image in it.visuals]
        else:
            kwargs["videos"] = [it.visuals[0] for it in items]
        inputs = self._processor(**kwargs)
        return {
            k: v.to(self._device, self._dtype) if v.is_floating_point() else v.to(self._device)
            for k, v in inputs.items()
            if isinstance(v, Tensor)
        }

    @torch.inference_mode()
    def _answer(self, requests: list[Request]) -> list[Answer]:
        if self.mode == "option_scores" and not self.options:
            raise ValueError("mode='option_scores' needs `options`: the class names to score")
        self.prepare()
        items = [self._item(r) for r in requests]
        if self.mode == "option_scores":
            return [self._option_answer(item) for item in items]
        texts: list[str] = [""] * len(items)
        for kind in ("image", "video"):  # one processor call per kind: no mixed batches
            indices = [i for i, it in enumerate(items) if it.kind == kind]
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, text in zip(chunk, self._generate([items[i] for i in chunk]), strict=True):
                    texts[i] = text
        return [Answer(t) for t in texts]

    # ----------------------------------------------------------------------------- generate
    def _generate(self, items: Sequence[_Item]) -> list[str]:
        inputs = self._inputs(items)
        tokenizer = self._processor.tokenizer
        sampling = {"do_sample": True, "temperature": self.temperature} if self.do_sample else {
            "do_sample": False}  # fmt: skip
        output = self._model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )  # fmt: skip
        new_tokens = output[:, inputs["input_ids"].shape[1] :]  # decode only what was generated
        self.stats.prompt_tokens += int(inputs["attention_mask"].sum())
        self.stats.completion_tokens += _completion_tokens(new_tokens, self._eos_ids())
        return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _eos_ids(self) -> list[int]:
        eos = self._model.generation_config.eos_token_id
        if eos is None:
            eos = self._processor.tokenizer.eos_token_id
        return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))

    # ----------------------------------------------------------------------------- options
    def _continuation_ids(self, prompt_text: str, option: str) -> list[int]:
        """Tokens of ``option`` as they follow the prompt: the tokenized whole minus the tokenized
        prompt (lm-eval's rule), so a token that merges across the boundary is not split."""
        template = self.option_template
        if template is None:
            template = "{option}" if prompt_text[-1:].isspace() else " {option}"
        tokenizer = self._processor.tokenizer
        whole = tokenizer(prompt_text + template.format(option=option),
                          add_special_tokens=False)["input_ids"]  # fmt: skip
        context = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        if whole[: len(context)] != context:
            log.warning("option %r changes the tokenization of the prompt's end", option)
        continuation = whole[len(context) :]
        if not continuation:
            raise ValueError(f"option {option!r} tokenizes to nothing after the prompt")
        return continuation

    def _option_answer(self, item: _Item) -> Answer:
        """Log-likelihood of every option given the visual input and prompt (not black-box)."""
        inputs = self._inputs([item])
        prompt = self._model(**inputs, use_cache=True)
        # transformers 5 calls the key/value cache `cache`; 4.x called it `past_key_values`
        prompt_cache = getattr(prompt, "cache", None) or prompt.past_key_values
        first = prompt.logits[0, -1].float().log_softmax(-1)  # predicts each option's 1st token
        prompt_mask = inputs["attention_mask"]
        pad = self._processor.tokenizer.pad_token_id
        scores: list[float] = []
        for start in range(0, len(self.options), self.batch_size):
            options = self.options[start : start + self.batch_size]
            conts = [self._continuation_ids(item.text, o) for o in options]
            n, width = len(conts), max(map(len, conts))
            ids = torch.full((n, width), pad, dtype=torch.long)
            mask = torch.zeros(n, width, dtype=torch.long)
            for row, cont in enumerate(conts):  # right padding: real tokens keep their positions
                ids[row, : len(cont)] = torch.tensor(cont)
                mask[row, : len(cont)] = 1
            ids, mask = ids.to(self._device), mask.to(self._device)
            cache = copy.deepcopy(prompt_cache)
            cache.batch_repeat_interleave(n)
            logits = self._model(
                input_ids=ids, attention_mask=torch.cat([prompt_mask.expand(n, -1), mask], 1),
                use_cache=True, **{_cache_argument(self._model): cache},
            ).logits.float().log_softmax(-1)  # fmt: skip
            predicting = torch.cat([first.expand(n, 1, -1), logits[:, :-1]], dim=1)
            token_logp = predicting.gather(-1, ids.unsqueeze(-1)).squeeze(-1) * mask
            total = token_logp.sum(-1)
            if self.length_normalize:
                total = total / mask.sum(-1)
            scores.extend(total.tolist())
            self.stats.prompt_tokens += int(mask.sum())
        self.stats.prompt_tokens += int(prompt_mask.sum())
        option_scores = dict(zip(self.options, scores, strict=True))
        return Answer(max(option_scores, key=option_scores.__getitem__), option_scores)


def _completion_tokens(new_tokens: Tensor, eos_ids: list[int]) -> int:
    """Generated tokens up to and including each row's first end-of-sequence token."""
    if not eos_ids or new_tokens.numel() == 0:
        return new_tokens.numel()
    is_eos = torch.isin(new_tokens, torch.tensor(eos_ids, device=new_tokens.device))
    ended = is_eos.cumsum(-1) - is_eos.long() > 0  # strictly after the first EOS
    return int((~ended).sum())


def _cache_argument(model: Any) -> str:
    """The forward argument that takes a key/value cache in this transformers version."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _model_class(choice: ModelClass, model_type: str) -> Any:
    import transformers

    if choice == "auto":
        choice = {"llava": "llava", "video_llava": "video_llava"}.get(
            model_type, "image_text_to_text"
        )
    return {
        "llava": transformers.LlavaForConditionalGeneration,
        "video_llava": transformers.VideoLlavaForConditionalGeneration,
        "image_text_to_text": transformers.AutoModelForImageTextToText,
    }[choice]


def _check_choice(name: str, value: str, choices: Any) -> None:
    allowed = choices.__args__
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
