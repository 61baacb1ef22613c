"""Face alignment (FFHQ quad), paste-back, and reading photos as they are displayed."""

import json
import struct

import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import align as A
from chunkygan_jax import io as cio
from chunkygan_jax.errors import ImageError

from real_photos import astronaut, camera, grace_hopper, outside_quad

# Reference landmarks from dlib's 68-point shape predictor (face-recognition-models 0.3.0, dlib 20.0)
# run once on the same photos; dlib is not a dependency. FFHQ's recipe uses the mean of points 36-41
# and 42-47 as the eye centres and points 48 and 54 as the mouth corners. These points were checked by
# eye on an enlarged crop of each photo: they sit on the eyelid contours and on the outer mouth corners.
DLIB_ASTRONAUT = dict(eye_left=(1219 / 6, 101.5), eye_right=(246.5, 625 / 6),
                      mouth_left=(201.0, 139.0), mouth_right=(246.0, 141.0))
# ... and the quad that FFHQ's recipe makes of them (computed apart from chunkygan_jax.align).
DLIB_ASTRONAUT_QUAD = [[142.286, 15.517], [133.667, 188.964], [307.114, 197.583], [315.733, 24.136]]
DLIB_GRACE_HOPPER_QUAD = [[96.352, 41.162], [106.287, 367.923], [433.048, 357.988], [423.113, 31.227]]


def corner_error(quad, reference):
    return float(np.hypot(*(np.asarray(quad) - np.asarray(reference)).T).max())


def frame_quad(r):
    """The quad of the whole r x r image, in pixel coordinates (pixel centres at integers)."""
    return np.array([[-0.5, -0.5], [-0.5, r - 0.5], [r - 0.5, r - 0.5], [r - 0.5, -0.5]])


@pytest.fixture(scope="module")
def astro():
    photo = A.load_photo(astronaut())
    return photo, A.find_alignment(photo)


# ---------------------------------------------------------------------------------------------------
# The quad


def test_ffhq_quad_by_hand():
    # eyes 20 px apart on a level line, mouth 20 px below: the eye term wins (2 x 20 > 1.8 x 20), so the
    # half-side is 40; the centre is 10% of the way from the eye midpoint to the mouth midpoint
    quad = A.ffhq_quad((40, 50), (60, 50), (42, 70), (58, 70))
    np.testing.assert_allclose(quad, [[10, 12], [10, 92], [90, 92], [90, 12]], atol=1e-9)
    # the mouth term wins when the mouth is far below: half-side 1.8 x 40
    quad = A.ffhq_quad((40, 50), (60, 50), (45, 90), (55, 90))
    np.testing.assert_allclose(quad[2] - quad[0], [144, 144], atol=1e-9)


def test_ffhq_quad_turns_with_the_face():
    pts = np.array([(40, 50), (60, 50), (42, 70), (58, 70)], float)
    t = np.deg2rad(30)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    turned = A.ffhq_quad(*(pts @ rot.T + [100, 7]))
    np.testing.assert_allclose(turned, A.ffhq_quad(*pts) @ rot.T + [100, 7], atol=1e-9)


def test_astronaut_quad_matches_dlib(astro):
    photo, al = astro
    assert al.faces_found == 1 and al.face == 0 and al.photo_size == (512, 512)
    for name, ref in DLIB_ASTRONAUT.items():
        assert np.hypot(*np.subtract(al.landmarks[name], ref)) < 2.0, name
    np.testing.assert_allclose(A.ffhq_quad(**DLIB_ASTRONAUT), DLIB_ASTRONAUT_QUAD, atol=2e-3)
    # the quad is about 174 px wide; its corners agree with dlib's within a few pixels
    assert corner_error(al.quad, DLIB_ASTRONAUT_QUAD) < 3.0


def test_grace_hopper_quad_near_dlib():
    al = A.find_alignment(grace_hopper())
    assert al.photo_size == (512, 600) and al.faces_found == 1
    # Behind glasses and with narrowed eyes the two models place the eye corners about 1.5 px apart
    # on each side, which widens the quad (sized by 4x the eye distance): allow 5% of its side.
    assert corner_error(al.quad, DLIB_GRACE_HOPPER_QUAD) < 0.05 * al.side


def test_profile_face_is_found():
    al = A.find_alignment(camera())  # greyscale, face in profile
    assert al.faces_found == 1
    # the face is between x 160..260, y 60..200 in this photo
    centre = al.quad.mean(0)
    assert 180 < centre[0] < 280 and 100 < centre[1] < 200 and 60 < al.side < 200


# ---------------------------------------------------------------------------------------------------
# The aligned image


def test_aligned_face_aligns_to_the_whole_frame(astro):
    photo, al = astro
    img, al2 = A.align(photo, 256)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    np.testing.assert_allclose(al2.quad, al.quad)
    # the aligned face, aligned again, fills the frame: its quad is the image's own border
    again = A.find_alignment(img)
    assert corner_error(again.quad, frame_quad(256)) < 0.03 * 256
    flt = A.align_image(photo, al, 64, output="float")
    assert flt.dtype == np.float32 and -1 <= flt.min() and flt.max() <= 1
    assert np.abs((flt + 1) * 127.5 - np.asarray(Image.fromarray(img).resize((64, 64), Image.BOX))).mean() < 4


def test_align_image_geometry():
    # a dot at a known place lands where the quad maps it, for a turned quad, with and without the
    # supersampling (large quad) and the integer shrink (quad > 4x the output)
    for side, res in ((80, 64), (300, 64), (600, 64)):
        t = np.deg2rad(20)
        half_x = side / 2 * np.array([np.cos(t), np.sin(t)])
        half_y = np.array([-half_x[1], half_x[0]])
        c = np.array([400.0, 380.0])
        quad = np.stack([c - half_x - half_y, c - half_x + half_y, c + half_x + half_y, c + half_x - half_y])
        photo = np.zeros((800, 800, 3), np.uint8)
        u, v = 0.3, 0.7  # the dot's place in the aligned frame, as fractions
        p = quad[0] + u * (quad[3] - quad[0]) + v * (quad[1] - quad[0])
        r = max(side / res, 1.0) * 1.5
        yy, xx = np.mgrid[0:800, 0:800]
        photo[(xx - p[0]) ** 2 + (yy - p[1]) ** 2 <= r * r] = 255
        out = A.align_image(photo, quad, res)[..., 0].astype(float)
        ys, xs = np.mgrid[0:res, 0:res]
        found = np.array([(xs * out).sum(), (ys * out).sum()]) / out.sum()
        np.testing.assert_allclose(found, [u * res - 0.5, v * res - 0.5], atol=0.35)


def test_quad_leaving_the_photo_is_padded_not_black(astro):
    photo, al = astro
    # cut the photo just left of the eyes: a third of the quad now lies outside it
    cut = np.ascontiguousarray(photo[:, 190:])
    quad = al.quad - [190, 0]
    full = A.align_image(photo, al, 128).astype(int)
    part = A.align_image(cut, quad, 128).astype(int)
    # where the aligned pixels come from well inside the cut photo, nothing changed
    ys, xs = np.mgrid[0:128, 0:128]
    src_x = quad[0, 0] + (xs + 0.5) / 128 * (quad[3, 0] - quad[0, 0]) + (ys + 0.5) / 128 * (quad[1, 0] - quad[0, 0])
    inside = src_x > 3
    assert np.abs(full - part)[inside].max() <= 2
    # outside it: reflected, blurred and faded; not black, and smoother than the photo
    outside = src_x < -5
    assert outside.sum() > 1000 and part[outside].mean() > 60
    gx = lambda a: np.abs(np.diff(a.mean(-1), axis=1))  # noqa: E731
    assert gx(part)[outside[:, 1:]].mean() < 0.5 * gx(full)[outside[:, 1:]].mean()


# ---------------------------------------------------------------------------------------------------
# Faces: none, several


def test_no_face_is_an_image_error(tmp_path):
    yy, xx = np.mgrid[0:300, 0:400]
    sky = np.stack([xx * 0.5, yy * 0.6 + 40, 200 + 0 * xx], -1)
    sky += np.random.default_rng(0).normal(0, 6, sky.shape)
    path = tmp_path / "sky.png"
    Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8)).save(path)
    with pytest.raises(ImageError) as e:
        A.find_alignment(path)
    assert str(e.value) == f"no face found in {path}"
    with pytest.raises(ImageError, match="no face found in"):
        A.align(path, 64)


def test_several_faces_count_and_choice(astro):
    photo, al_astro = astro
    grace = A.load_photo(grace_hopper())
    small = np.asarray(Image.fromarray(grace).resize((205, 240), Image.LANCZOS))  # 0.4 x
    al_grace = A.find_alignment(small)
    canvas = np.full((620, 800, 3), 190, np.uint8)
    canvas[40:280, 20:225] = small   # left: Grace Hopper, face about 137 px
    canvas[70:582, 260:772] = photo  # right: the astronaut, face about 174 px
    default = A.find_alignment(canvas)
    assert default.faces_found == 2 and default.face == 1  # the largest face
    assert corner_error(default.quad, al_astro.quad + [260, 70]) < 3
    left = A.find_alignment(canvas, face=0)
    assert left.face == 0 and left.faces_found == 2
    assert corner_error(left.quad, al_grace.quad + [20, 40]) < 0.03 * left.side
    # the rightmost face is the largest one; asked for by number, it comes from the tiled pass, whose merged
    # detection box may differ a little from the whole-photo pass's, and the landmarks with it
    last = A.find_alignment(canvas, face=-1)
    assert last.face == default.face and corner_error(last.quad, default.quad) < 0.01 * default.side
    with pytest.raises(ImageError, match="face=2 asked for, but 2 faces were found"):
        A.find_alignment(canvas, face=2)


def test_alignment_record_is_json(astro):
    _, al = astro
    d = json.loads(json.dumps(al.to_json()))
    assert set(d) == {"quad", "landmarks", "face", "faces_found", "photo_size"}
    assert np.shape(d["quad"]) == (4, 2) and d["face"] == 0 and d["faces_found"] == 1
    assert set(d["landmarks"]) == {"eye_left", "eye_right", "mouth_left", "mouth_right"}
    back = A.Alignment.from_json(d)
    np.testing.assert_allclose(back.quad, al.quad, atol=1e-3)
    with pytest.raises(ImageError, match="quad"):
        A.Alignment.from_json({**d, "quad": [[0, 0]]})


# ---------------------------------------------------------------------------------------------------
# Paste-back


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_paste_back_changes_only_the_quad(astro, blend):
    photo, al = astro
    aligned = A.align_image(photo, al, 256)
    edited = 255 - aligned  # something very different from the photo
    pasted = A.paste_back(photo, edited, al, blend=blend)
    assert pasted.shape == photo.shape and pasted.dtype == np.uint8
    out = outside_quad(al.quad, 512, 512, margin=1.0)
    assert out.sum() > 0.8 * 512 * 512 - al.side ** 2
    np.testing.assert_array_equal(pasted[out], photo[out])
    # the centre of the face did change
    c = np.round(al.quad.mean(0)).astype(int)
    face = (slice(c[1] - 30, c[1] + 30), slice(c[0] - 30, c[0] + 30))
    assert np.abs(pasted[face].astype(int) - photo[face]).mean() > 40


def test_paste_back_inverts_the_alignment(astro):
    photo, al = astro
    inner = ~outside_quad(al.quad, 512, 512, margin=-0.15 * al.side)  # the quad's inner part
    # a paste half a pixel off to the right, to show that the check can fail
    moved = A.Alignment(quad=al.quad + [0.5, 0], landmarks=al.landmarks, face=0, faces_found=1,
                        photo_size=al.photo_size)
    for res, bound in ((64, 9.0), (1024, 3.0)):  # a face larger than the output, and smaller
        aligned = A.align_image(photo, al, res)
        back = A.paste_back(photo, aligned, al).astype(int)
        err = np.abs(back - photo)[inner].mean()
        off = np.abs(A.paste_back(photo, aligned, moved).astype(int) - photo)[inner].mean()
        assert err < bound and err < (0.95 if res == 64 else 0.6) * off, (res, err, off)
        as_float = A.paste_back(photo, aligned.astype(np.float32) / 127.5 - 1, al)
        assert np.abs(as_float.astype(int) - back).max() <= 1


def test_paste_back_refuses_a_different_photo(astro):
    photo, al = astro
    with pytest.raises(ImageError, match="512x512"):
        A.paste_back(photo[:500], np.zeros((64, 64, 3), np.uint8), al)


# ---------------------------------------------------------------------------------------------------
# Photos as cameras write them


def test_exif_orientation_applied(tmp_path):
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:, :32] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    assert Image.open(path).size == (64, 40)
    shown = A.load_photo(path)
    assert shown.shape == (64, 40, 3)
    assert shown[:28].mean() > 240 and shown[36:].mean() < 15  # the stored left is now the top
    assert cio.load_image(path, crop="center").shape == (40, 40, 3)


def test_unreadable_format_named_in_one_line(tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    for load in (lambda: cio.load_image(path, 64), lambda: A.find_alignment(path)):
        with pytest.raises(ImageError) as e:
            load()
        assert "HEIC" in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def linear_rgb_icc() -> bytes:
    """A minimal ICC v2 display profile: sRGB's primaries with a linear (gamma 1) transfer curve."""
    def s15(v):
        return struct.pack(">i", int(round(v * 65536)))

    def xyz(x, y, z):
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    text = b"linear RGB\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 256)  # one entry: gamma 1.0 (u8.8)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000)
              + b"mntrRGB XYZ " + bytes(12) + b"acsp" + bytes(28) + s15(0.9642) + s15(1.0) + s15(0.8249)
              + bytes(48))
    return header + table + data


def test_icc_profile_converted_to_srgb(tmp_path):
    path = tmp_path / "linear.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path, icc_profile=linear_rgb_icc())
    # linear 128/255 is sRGB 188/255
    assert abs(int(A.load_photo(path)[0, 0, 0]) - 188) <= 1
    assert abs((cio.load_image(path)[0, 0, 0] + 1) * 127.5 - 188) <= 1
