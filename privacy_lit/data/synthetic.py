"""The embedded benchmark: a seeded, procedural generator of people doing actions.

``python -m privacy_lit fit --config conf/demo.yaml`` needs no download: this module writes small
videos and images to ``data/synthetic/`` in the *same layouts as the real datasets* —
HMDB51-style ``.avi`` videos with ``testTrainMulti_7030_splits`` files for the action task and
VISPR-style JPEGs with one JSON label file per image for the privacy task — so the demo exercises
the loaders the real benchmarks use.

Why the trade-off is real:
- **Actions** are defined by *motion and silhouette* of a stick-figure person (arm, leg, torso and
  whole-body trajectories), so a recognizer needs the limbs over time: blackening the person or a
  heavy blur removes exactly that.
- **Private attributes** are carried by *appearance* only — skin tone (``a17_color`` = dark tone),
  complete / partial / no face (``a9``/``a10``), a gender cue (long hair and a skirt, ``a4``),
  semi-nudity (skin-coloured torso, ``a12``) and a second person close by (personal relationship,
  ``a64``) or far away (social, ``a65``). They are sampled independently of the action, so motion
  alone says nothing about them.
- Backgrounds (gradients, stripes, blobs), placement, scale, speed, phase and sensor noise vary.

Generation is deterministic from the seed (one ``numpy`` generator per sample, derived from the
seed and the sample's index) and takes a few seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from privacy_lit.data.hmdb51 import HMDB51Clips
from privacy_lit.data.joint import PrivacyUtilityDataModule
from privacy_lit.data.vispr import VISPR7, VISPRImages

ACTIONS: tuple[str, ...] = ("wave", "clap", "jump", "squat", "walk", "kick", "punch", "bend")
"""Action folder names (HMDB51-style lowercase)."""

ACTION_PHRASES: dict[str, str] = {
    "wave": "waving a hand",
    "clap": "clapping hands",
    "jump": "jumping up and down",
    "squat": "doing squats",
    "walk": "walking",
    "kick": "kicking with a leg",
    "punch": "punching with the fists",
    "bend": "bending over",
}
"""What the embedded black box says it sees; class names for the retrieval scoring."""

ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("a4_gender", "personal", "Gender"),
    ("a9_face_complete", "personal", "Face (Complete)"),
    ("a10_face_partial", "personal", "Face (Partial)"),
    ("a17_color", "personal", "Skin Color"),
    ("a12_semi_nudity", "nudity", "Semi-nudity"),
    ("a64_rel_personal", "relationship", "Personal relationship"),
    ("a65_rel_social", "relationship", "Social relationship"),
)
"""(VISPR attribute id, group, description) of the 7 attributes of the UCF101-VISPR setting."""

GENERATOR_VERSION = 1
_CANVAS = 128  # people are drawn at 2x and area-downsampled, for anti-aliased thin limbs
_LIGHT_SKIN = np.array([232, 196, 166])
_DARK_SKIN = np.array([104, 70, 48])


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes of the embedded benchmark; everything else follows from ``seed``."""

    seed: int = 0
    size: int = 64
    frames: int = 16
    fps: int = 8
    videos_per_action: dict[str, int] = field(
        default_factory=lambda: {"train": 32, "test": 12, "unused": 4}
    )
    images: dict[str, int] = field(
        default_factory=lambda: {"train2017": 800, "val2017": 200, "test2017": 400}
    )


@dataclass
class Appearance:
    """Everything private about one person, and the colours that carry it."""

    dark_skin: bool
    face: str  # "complete" | "partial" | "none"
    gender_cue: bool
    semi_nude: bool
    skin: np.ndarray
    shirt: np.ndarray
    pants: np.ndarray
    hair: np.ndarray


@dataclass
class Scene:
    """One person (the actor) and an optional second person, on a background."""

    action: str
    actor: Appearance
    second: Appearance | None
    relationship: str  # "none" | "personal" | "social"
    background: np.ndarray
    noise: float
    cx: float
    cy: float
    scale: float
    period: float
    phase: float
    speed: float  # walking drift in canvas units per frame

    def labels(self) -> list[str]:
        """The VISPR attribute ids present in this scene."""
        labels = []
        if self.actor.gender_cue:
            labels.append("a4_gender")
        if self.actor.face == "complete":
            labels.append("a9_face_complete")
        if self.actor.face == "partial":
            labels.append("a10_face_partial")
        if self.actor.dark_skin:
            labels.append("a17_color")
        if self.actor.semi_nude:
            labels.append("a12_semi_nudity")
        if self.relationship == "personal":
            labels.append("a64_rel_personal")
        if self.relationship == "social":
            labels.append("a65_rel_social")
        return labels


def _color(rng: np.random.Generator, low: int = 30, high: int = 225) -> np.ndarray:
    return rng.integers(low, high, size=3)


def _clothing(rng: np.random.Generator) -> np.ndarray:
    """A saturated clothing colour far from both skin tones, so nudity is a colour question."""
    while True:
        c = _color(rng, 20, 235)
        if min(np.abs(c - _LIGHT_SKIN).sum(), np.abs(c - _DARK_SKIN).sum()) > 150:
            return c


def _appearance(rng: np.random.Generator) -> Appearance:
    dark = bool(rng.random() < 0.5)
    skin = (_DARK_SKIN if dark else _LIGHT_SKIN) + rng.integers(-14, 15, size=3)
    face = str(rng.choice(["complete", "partial", "none"], p=[0.4, 0.3, 0.3]))
    hair = rng.integers(10, 90, size=3) if rng.random() < 0.8 else rng.integers(150, 220, size=3)
    return Appearance(
        dark_skin=dark,
        face=face,
        gender_cue=bool(rng.random() < 0.5),
        semi_nude=bool(rng.random() < 0.4),
        skin=skin,
        shirt=_clothing(rng),
        pants=_clothing(rng) // 2,
        hair=hair,
    )


def _background(rng: np.random.Generator) -> np.ndarray:
    n = _CANVAS
    kind = rng.integers(3)
    a, b = _color(rng, 60, 250).astype(np.float32), _color(rng, 60, 250).astype(np.float32)
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]
    if kind == 0:  # vertical gradient (sky/floor)
        bg = a * (1 - t) + b * t
        bg = np.broadcast_to(bg, (n, n, 3))
    elif kind == 1:  # stripes (walls, shelves)
        period = rng.integers(12, 40)
        mask = ((np.arange(n) // period) % 2).astype(np.float32)[:, None, None]
        bg = np.broadcast_to(a * mask + b * (1 - mask), (n, n, 3))
        if rng.random() < 0.5:
            bg = bg.transpose(1, 0, 2)
    else:  # smooth blobs (foliage, clutter)
        low = rng.random((6, 6, 1)).astype(np.float32)
        low = cv2.resize(low, (n, n), interpolation=cv2.INTER_CUBIC)[..., None]
        bg = a * low + b * (1 - low)
    return np.clip(bg, 0, 255).astype(np.float32)


def _scene(rng: np.random.Generator, action: str) -> Scene:
    relationship = str(rng.choice(["none", "personal", "social"], p=[0.5, 0.25, 0.25]))
    if relationship == "none":
        cx = rng.uniform(46, 82)
    else:  # leave room for the second person on one side
        cx = rng.uniform(38, 50) if rng.random() < 0.5 else rng.uniform(78, 90)
    return Scene(
        action=action,
        actor=_appearance(rng),
        second=None if relationship == "none" else _appearance(rng),
        relationship=relationship,
        background=_background(rng),
        noise=float(rng.uniform(0, 8)),
        cx=float(cx),
        cy=float(rng.uniform(68, 76)),
        scale=float(rng.uniform(0.85, 1.05)),
        period=float(rng.uniform(10, 16)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        speed=float(rng.choice([-1, 1]) * rng.uniform(1.2, 2.0)),
    )


def pose(action: str, phi: float) -> dict[str, float]:
    """Joint angles (degrees from hanging straight down, + = towards image right) at phase φ.

    Each action is a distinct trajectory of the limbs or the whole body, so it is readable from
    the silhouette over time and from nothing else.
    """
    s, c = math.sin(phi), math.cos(phi)
    p = {"torso": 0.0, "dy": 0.0, "sl": -15.0, "sr": 15.0, "el": 0.0, "er": 0.0,
         "hl": -8.0, "hr": 8.0, "kl": 0.0, "kr": 0.0}  # fmt: skip
    if action == "wave":
        p.update(sr=150.0, er=-45.0 * s)
    elif action == "clap":
        opening = (1 + s) / 2
        p.update(sl=-(40 + 50 * opening), sr=40 + 50 * opening, el=70 * (1 - opening),
                 er=-70 * (1 - opening))  # fmt: skip
    elif action == "jump":
        up = abs(s)
        p.update(dy=-16 * up, sl=-(30 + 130 * up), sr=30 + 130 * up, kl=30 * (1 - up),
                 kr=-30 * (1 - up))  # fmt: skip
    elif action == "squat":
        down = (1 - c) / 2
        p.update(dy=16 * down, hl=-(8 + 50 * down), hr=8 + 50 * down, kl=100 * down,
                 kr=-100 * down, sl=-(15 + 70 * down), sr=15 + 70 * down)  # fmt: skip
    elif action == "walk":
        p.update(hl=-25 * s, hr=25 * s, kl=15 * max(0.0, s), kr=-15 * max(0.0, -s),
                 sl=20 * s, sr=-20 * s)  # fmt: skip
    elif action == "kick":
        p.update(hr=10 + 80 * max(0.0, s), kr=-30 * max(0.0, -s), sl=-35.0, sr=35.0)
    elif action == "punch":
        p.update(sl=-90.0, sr=90.0, el=120 * max(0.0, s), er=-120 * max(0.0, -s))
    elif action == "bend":
        down = (1 - c) / 2
        p.update(torso=75 * down, sl=-10 + 60 * down, sr=10 + 60 * down)
    else:
        raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")
    return p


def _limb(origin: np.ndarray, angle_deg: float, length: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return origin + length * np.array([math.sin(a), math.cos(a)])


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * 4)), int(round(p[1] * 4))  # 2 bits of sub-pixel precision


def _draw_person(img: np.ndarray, look: Appearance, cx: float, cy: float, scale: float,
                 angles: dict[str, float]) -> None:  # fmt: skip
    """Draw one person in place; limbs use the skin colour where skin is visible."""
    aa, sh = cv2.LINE_AA, 2
    limb_w = max(2, int(7 * scale))
    hip = np.array([cx, cy + angles["dy"]])
    neck = _limb(hip, 180 + angles["torso"], 30 * scale)
    head = _limb(neck, 180 + angles["torso"], 11 * scale)
    sleeve = look.skin if look.semi_nude else look.shirt
    torso_col = look.skin if look.semi_nude else look.shirt
    for side in ("l", "r"):
        knee = _limb(hip, angles[f"h{side}"], 19 * scale)
        foot = _limb(knee, angles[f"h{side}"] + angles[f"k{side}"], 19 * scale)
        cv2.line(img, _pt(hip), _pt(knee), look.pants.tolist(), limb_w, aa, sh)
        cv2.line(img, _pt(knee), _pt(foot), look.pants.tolist(), limb_w, aa, sh)
    if look.gender_cue:  # a skirt over the thighs
        w = 13 * scale
        skirt = np.array([hip + [-w / 2, -3 * scale], hip + [w / 2, -3 * scale],
                          hip + [w, 14 * scale], hip + [-w, 14 * scale]])  # fmt: skip
        cv2.fillPoly(img, [np.round(skirt * 4).astype(np.int32)], look.shirt.tolist(), aa, sh)
    cv2.line(img, _pt(hip), _pt(neck), torso_col.tolist(), int(15 * scale), aa, sh)
    for side in ("l", "r"):
        elbow = _limb(neck, angles[f"s{side}"], 16 * scale)
        hand = _limb(elbow, angles[f"s{side}"] + angles[f"e{side}"], 15 * scale)
        cv2.line(img, _pt(neck), _pt(elbow), sleeve.tolist(), limb_w, aa, sh)
        cv2.line(img, _pt(elbow), _pt(hand), look.skin.tolist(), limb_w, aa, sh)
    r = 9 * scale
    if look.gender_cue:  # long hair falling behind the head to the shoulders
        top = head + [-r * 1.1, -r * 0.6]
        bottom = head + [r * 1.1, r * 1.9]
        cv2.rectangle(img, _pt(top), _pt(bottom), look.hair.tolist(), -1, aa, sh)
    if look.face == "none":  # the back of the head: hair only
        cv2.circle(img, _pt(head), int(r * 4), look.hair.tolist(), -1, aa, sh)
        return
    cv2.circle(img, _pt(head), int(r * 4), look.skin.tolist(), -1, aa, sh)
    eye = (0, 0, 0) if not look.dark_skin else (250, 250, 250)
    mouth = (150, 20, 30)
    if look.face == "complete":
        for dx in (-0.4, 0.4):
            cv2.circle(img, _pt(head + [dx * r, -0.15 * r]), int(0.2 * r * 4), eye, -1, aa, sh)
        cv2.line(img, _pt(head + [-0.35 * r, 0.45 * r]), _pt(head + [0.35 * r, 0.45 * r]),
                 mouth, max(1, int(2 * scale)), aa, sh)  # fmt: skip
    else:  # partial: hair covers one half of the face, one eye and half a mouth remain
        cv2.circle(img, _pt(head + [0.4 * r, -0.15 * r]), int(0.2 * r * 4), eye, -1, aa, sh)
        cv2.line(img, _pt(head + [0.05 * r, 0.45 * r]), _pt(head + [0.35 * r, 0.45 * r]),
                 mouth, max(1, int(2 * scale)), aa, sh)  # fmt: skip
        cv2.ellipse(img, _pt(head), (int(r * 4), int(r * 4)), 0, 90, 270, look.hair.tolist(),
                    -1, aa, sh)  # fmt: skip


def render(scene: Scene, t: float, rng: np.random.Generator, size: int) -> np.ndarray:
    """Frame at time t (in frames) as RGB uint8 ``size × size × 3``."""
    img = scene.background.copy()
    phi = scene.phase + 2 * math.pi * t / scene.period
    if scene.second is not None:
        idle = pose("walk", 0.0) | {"sl": -12 + 4 * math.sin(phi / 3), "sr": 12.0}
        if scene.relationship == "personal":
            sx = scene.cx + (30 if scene.cx < 64 else -30)
            _draw_person(img, scene.second, sx, scene.cy, scene.scale, idle)
        else:
            sx = 108.0 if scene.cx < 64 else 20.0
            _draw_person(img, scene.second, sx, scene.cy - 22, scene.scale * 0.55, idle)
    cx = scene.cx
    if scene.action == "walk":  # walking drifts across the frame, bouncing at the borders
        span = 60.0
        travel = (scene.cx - 34 + scene.speed * t) % (2 * span)
        cx = 34 + (travel if travel < span else 2 * span - travel)
    _draw_person(img, scene.actor, cx, scene.cy, scene.scale, pose(scene.action, phi))
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img = img + rng.normal(0, scene.noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _sample_rng(seed: int, kind: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, index])


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Write RGB frames as an MJPEG ``.avi`` (the container HMDB51 ships)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot open a video writer for {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def generate(root: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the benchmark under ``root`` (idempotent: returns at once if it is already there).

    Layout (the real datasets' layouts, see ``data/README.md``)::

        root/hmdb51/<action>/<action>_<nnnn>.avi
        root/testTrainMulti_7030_splits/<action>_test_split1.txt   "<video>.avi <0|1|2>"
        root/vispr/attributes.tsv, {train,val,test}2017.txt
        root/vispr/annotations/<split>/<id>.json   {"image_path": ..., "labels": [...]}
        root/vispr/images/<split>/<id>.jpg
        root/videos.json   the privacy attributes of every video (PA-HMDB51-like ground truth)
    """
    root = Path(root)
    stamp = root / "generator.json"
    wanted = {"version": GENERATOR_VERSION, **asdict(config)}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return root
    root.mkdir(parents=True, exist_ok=True)
    _write_videos(root, config)
    _write_images(root / "vispr", config)
    stamp.write_text(json.dumps(wanted, indent=1))
    return root


def _write_videos(root: Path, config: SyntheticConfig) -> None:
    split_dir = root / "testTrainMulti_7030_splits"
    split_dir.mkdir(parents=True, exist_ok=True)
    split_ids = {"unused": 0, "train": 1, "test": 2}
    video_labels: dict[str, list[str]] = {}
    total = len(ACTIONS) * sum(config.videos_per_action.values())
    bar = tqdm(total=total, desc="synthetic videos", unit="video")
    for a_idx, action in enumerate(ACTIONS):
        folder = root / "hmdb51" / action
        folder.mkdir(parents=True, exist_ok=True)
        lines, index = [], 0
        for split, count in config.videos_per_action.items():
            for _ in range(count):
                rng = _sample_rng(config.seed, a_idx, index)
                scene = _scene(rng, action)
                frames = [render(scene, t, rng, config.size) for t in range(config.frames)]
                name = f"{action}_{index:04d}.avi"
                write_video(folder / name, frames, config.fps)
                lines.append(f"{name} {split_ids[split]}")
                video_labels[f"{action}/{name}"] = scene.labels()
                index += 1
                bar.update()
        (split_dir / f"{action}_test_split1.txt").write_text("\n".join(lines) + "\n")
    bar.close()
    (root / "videos.json").write_text(json.dumps(video_labels, indent=0, sort_keys=True))


def _write_images(root: Path, config: SyntheticConfig) -> None:
    rows = ["idx\tattribute_id\tgroup\tdescription"]
    rows += [f"{i}\t{a}\t{g}\t{d}" for i, (a, g, d) in enumerate(ATTRIBUTES)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "attributes.tsv").write_text("\n".join(rows) + "\n")
    total = sum(config.images.values())
    bar = tqdm(total=total, desc="synthetic images", unit="image")
    for s_idx, (split, count) in enumerate(config.images.items()):
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        listing = []
        for i in range(count):
            rng = _sample_rng(config.seed, 100 + s_idx, i)
            scene = _scene(rng, str(rng.choice(ACTIONS)))
            frame = render(scene, float(rng.uniform(0, 32)), rng, config.size)
            image_id = f"2017_{s_idx + 1}{i:07d}"
            image_path = f"images/{split}/{image_id}.jpg"
            cv2.imwrite(str(root / image_path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])  # fmt: skip
            annotation = f"annotations/{split}/{image_id}.json"
            (root / annotation).write_text(
                json.dumps({"image_path": image_path, "labels": scene.labels()})
            )
            listing.append(annotation)
            bar.update()
        (root / f"{split}.txt").write_text("\n".join(listing) + "\n")
    bar.close()


class SyntheticDataModule(PrivacyUtilityDataModule):
    """The embedded benchmark: HMDB51-layout clips for actions, VISPR-layout images for privacy.

    ``prepare_data`` generates ``root`` on first use (a few seconds); later runs reuse it as long
    as the generator version and sizes match. ``skip_unreadable``: see
    :class:`~privacy_lit.data.joint.PrivacyUtilityDataModule`.
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        seed: int = 0,
        num_frames: int = 8,
        stride: int = 2,
        size: int = 64,
        videos_per_action: dict[str, int] | None = None,
        images: dict[str, int] | None = None,
        batch_size: int = 16,
        privacy_batch_size: int = 32,
        num_workers: int = 0,
        skip_unreadable: bool = False,
    ):
        super().__init__(batch_size, privacy_batch_size, num_workers, skip_unreadable)
        self.root = Path(root)
        sizes = {"videos_per_action": videos_per_action, "images": images}
        self.config = SyntheticConfig(seed=seed, size=size, **{k: v for k, v in sizes.items() if v})
        self.num_frames, self.stride, self.seed = num_frames, stride, seed

    def prepare_data(self) -> None:
        generate(self.root, self.config)

    def utility_dataset(self, stage: str) -> HMDB51Clips:
        return HMDB51Clips(
            self.root / "hmdb51",
            self.root / "testTrainMulti_7030_splits",
            split=1,
            stage="train" if stage == "train" else "test",
            num_frames=self.num_frames,
            stride=self.stride,
            size=self.config.size,
            random_start=stage == "train",
            seed=self.seed,
        )

    def privacy_dataset(self, stage: str) -> VISPRImages:
        split = {"train": "train2017", "val": "val2017"}.get(stage, "test2017")
        return VISPRImages(self.root / "vispr", split, VISPR7, size=self.config.size)

    @property
    def class_names(self) -> list[str]:
        # HMDB51Clips indexes the sorted action folders; retrieval scores against the phrases
        return [ACTION_PHRASES[a] for a in sorted(ACTIONS)]

    @property
    def attribute_names(self) -> list[str]:
        return list(VISPR7)
