"""Tests for cfn_fast.data.loaders and cfn_fast.data.download.

Tiny fixture files in every original format are written to ``tmp_path``; the real MovieLens
sets are read (never copied) from the team's ``../shared/data`` when it is there.
"""
from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pandas", reason="text rating files are read with pandas (cfn_fast[pandas])")

from cfn_fast.data import RatingSet, download  # noqa: E402
from cfn_fast.data.download import download_movielens  # noqa: E402
from cfn_fast.data.loaders import load_movielens, load_ratings  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ML1M_GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
               "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def triples(rs: RatingSet) -> set[tuple[object, object, float]]:
    """The ratings as (original user id, original item id, rating) triples."""
    return {(u.item() if hasattr(u, "item") else u, i.item() if hasattr(i, "item") else i, float(r))
            for u, i, r in zip(rs.user_ids[rs.user], rs.item_ids[rs.item], rs.rating)}


def row(rs: RatingSet, kind: str, original_id: int) -> dict[str, float]:
    """Non-zero features of one user / item, by feature name."""
    if kind == "user":
        values, names = rs.user_features[rs.user_index(original_id)[0]], rs.user_feature_names
    else:
        values, names = rs.item_features[rs.item_index(original_id)[0]], rs.item_feature_names
    return {n: float(v) for n, v in zip(names, values) if v != 0}


# ============================================================================= fixtures: original formats
GENRE_FLAGS = {  # u.item flag positions: unknown, Action, ..., Western
    242: [5],                 # Kolya: Comedy
    302: [6, 10, 13, 16],     # L.A. Confidential: Crime, Film-Noir, Mystery, Thriller
    377: [4, 5],              # Heavyweights: Children's, Comedy
    1: [3, 4, 5],             # Toy Story (never rated here: a cold item)
}
ML100K_GENRES = ["unknown"] + ML1M_GENRES


def ml100k(folder: Path) -> Path:
    write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
                             "22\t377\t1\t878887116\n196\t302\t5\t881250950\n")
    write(folder / "u.user", "196|49|M|writer|55105\n186|39|F|executive|00000\n"
                             "22|25|M|writer|40206\n7|57|M|administrator|91344\n")
    lines = []
    for movie, flags in GENRE_FLAGS.items():
        bits = ["1" if j in flags else "0" for j in range(19)]
        lines.append("|".join([str(movie), f"Movie {movie} (1997)", "01-Jan-1997", "", "http://x"] + bits))
    write(folder / "u.item", "\n".join(lines) + "\n", "latin-1")
    return folder


def ml1m(folder: Path) -> Path:
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"
                                  "2::1193::4::978298413\n3::3408::4::978300275\n")
    write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"
                                "4::M::45::7::02460\n")
    write(folder / "movies.dat",
          "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
          "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
          "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
          "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
          "3408::Erin Brockovich (2000)::Drama\n"
          "3952::Misérables, Les (1995)::Drama|Musical\n", "latin-1")
    return folder


def ml10m(folder: Path) -> Path:
    write(folder / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n"
                                  "2::122::0.5::868245777\n3::185::3::1133571238\n")
    write(folder / "movies.dat",
          "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action|Crime|Thriller\n"
          "4973::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n"
          "8130::Girl, The (1999)::(no genres listed)\n", "latin-1")
    write(folder / "tags.dat",
          "15::4973::excellent!::1215184630\n20::122::Funny::1188263867\n21::122::funny ::1188263868\n"
          "25::185::hacker: culture::1188263869\n25::999::orphan::1188263870\n")
    return folder


def ml20m(folder: Path) -> Path:
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n"
                                  "1,29,3.5,1112484676\n2,2,4.0,974820889\n")
    write(folder / "movies.csv",
          "movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n"
          '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama|Fantasy\n'
          "131262,Innocence (2014),Adventure|Fantasy|Horror\n")
    write(folder / "tags.csv", 'userId,movieId,tag,timestamp\n18,2,Robin Williams,1449\n'
                               '65,29,"dark, surreal",1368\n65,2,robin williams,1368\n')
    return folder


# ============================================================================= load_ratings: formats
def test_u_data(tmp_path: Path) -> None:
    rs = load_ratings(ml100k(tmp_path) / "u.data")
    assert rs.scale == (1.0, 5.0)
    assert list(rs.user_ids) == [22, 186, 196] and list(rs.item_ids) == [242, 302, 377]
    assert triples(rs) == {(196, 242, 3.0), (186, 302, 3.0), (22, 377, 1.0), (196, 302, 5.0)}
    assert rs.rating.dtype == np.float32 and rs.user_features is None


def test_ml1m_ratings_dat(tmp_path: Path) -> None:
    rs = load_ratings(ml1m(tmp_path) / "ratings.dat")
    assert rs.scale == (3.0, 5.0)  # observed: the scale is never guessed from the file name
    assert triples(rs) == {(1, 1193, 5.0), (1, 661, 3.0), (2, 1193, 4.0), (3, 3408, 4.0)}


def test_ml10m_ratings_dat_half_stars(tmp_path: Path) -> None:
    rs = load_ratings(ml10m(tmp_path) / "ratings.dat")
    assert rs.scale == (0.5, 5.0)
    assert triples(rs) == {(1, 122, 5.0), (1, 185, 4.5), (2, 122, 0.5), (3, 185, 3.0)}


def test_ml20m_ratings_csv(tmp_path: Path) -> None:
    rs = load_ratings(ml20m(tmp_path) / "ratings.csv")
    assert rs.scale == (3.5, 4.0)  # observed
    assert load_ratings(ml20m(tmp_path) / "ratings.csv", scale=(0.5, 5)).scale == (0.5, 5.0)
    assert triples(rs) == {(1, 2, 3.5), (1, 29, 3.5), (2, 2, 4.0)}


def test_douban_uir_index(tmp_path: Path) -> None:
    rs = load_ratings(write(tmp_path / "uir.index", "1 1 5\n1\t2  3\n2 1 1\n"))
    assert rs.scale == (1.0, 5.0)
    assert triples(rs) == {(1, 1, 5.0), (1, 2, 3.0), (2, 1, 1.0)}


@pytest.mark.parametrize("name, text", [
    ("plain.csv", "1,10,2.5\n2,10,4\n2,11,1.5\n"),
    ("header.csv", "user,item,rating\n1,10,2.5\n2,10,4\n2,11,1.5\n"),
    ("stamps.csv", "1,10,2.5,100\n2,10,4,101\n2,11,1.5,102\n"),
    ("data.tsv", "user\titem\trating\ttimestamp\n1\t10\t2.5\t9\n2\t10\t4\t9\n2\t11\t1.5\t9\n"),
    ("semi.txt", "1;10;2.5\n2;10;4\n2;11;1.5\n"),
    ("spaces.txt", "1 10 2.5\n 2   10 4\n2 11 1.5\n\n"),
    ("named.csv", "timestamp,item_id,rating,user_id\n5,10,2.5,1\n5,10,4,2\n5,11,1.5,2\n"),
])
def test_generic_text_formats(tmp_path: Path, name: str, text: str) -> None:
    rs = load_ratings(write(tmp_path / name, text))
    assert triples(rs) == {(1, 10, 2.5), (2, 10, 4.0), (2, 11, 1.5)}
    assert rs.scale == (1.5, 4.0)  # generic files: observed min..max


def test_generic_string_ids_explicit_sep_scale_and_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path / "r.txt", "alice|m1|4\nbob|m1|2\nalice|m1|5\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_ratings(path, sep="|")
    rs = load_ratings(path, sep="|", scale=(1, 5), duplicates="mean")
    assert rs.scale == (1.0, 5.0)
    assert list(rs.user_ids) == ["alice", "bob"]
    assert triples(rs) == {("alice", "m1", 4.5), ("bob", "m1", 2.0)}


def test_npz(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(path, user=np.array([5, 3], np.int32), item=np.array([7, 7], np.int32),
             rating=np.array([1.0, 4.0], np.float32), timestamp=np.array([1, 2]))
    rs = load_ratings(path)
    assert triples(rs) == {(5, 7, 1.0), (3, 7, 4.0)} and rs.scale == (1.0, 4.0)
    assert load_ratings(path, scale=(0, 5)).scale == (0.0, 5.0)


# ============================================================================= load_ratings: bad input
def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_ratings(tmp_path / "nope.csv")


@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", "", "empty"),
    ("blank.csv", "\n  \n", "blank"),
    ("header_only.csv", "user,item,rating\n", "no rating rows"),
    ("nan.csv", "1,2,3\n1,3,nan\n", "data row 2: missing rating"),
    ("short.csv", "1,2,3,100\n1,3,4\n", "data row 2: missing timestamp"),
    ("long.csv", "1,2,3\n1,3,4,5,6\n", "malformed"),
    ("two.csv", "1,2\n3,4\n", "at least 3 columns"),
    ("five.csv", "1,2,3,4,5\n", "3 or 4 columns"),
    ("word.csv", "1,2,3\n1,3,good\n", "data row 2: rating 'good' is not a number"),
    ("inf.csv", "1,2,3\n1,3,inf\n", "not finite"),
    ("float_ids.csv", "1.5,2,3\n", "integers"),
    ("quote.csv", '1,2,3\n"1,2,3\n', "malformed"),
    ("ratings.dat", "1::2::3::4\n1::2::3::4::5\n", "malformed"),
    ("ratings.dat", "1::2::3::4\n1:2::3::4\n", "data row 2 has a single ':'"),
    ("ratings.dat", "1::2::3::4\n1::2::3\n", "data row 2: missing timestamp"),
])
def test_bad_text_files_raise_value_error_naming_the_file(tmp_path: Path, name: str, content: str,
                                                          message: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message) as info:
        load_ratings(path)
    assert name in str(info.value)


def test_not_utf8_generic_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("user,item,rating\nJosé,1,3\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv: not utf-8 text"):
        load_ratings(path)


def test_npz_missing_array(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(path, user=np.arange(2), item=np.arange(2))
    with pytest.raises(ValueError, match=r"r.npz: missing array\(s\) \['rating'\]"):
        load_ratings(path)


class _Trap:
    """Unpickling this object flips a flag: proof that a loader ran pickle."""

    unpickled = False

    def __setstate__(self, state: object) -> None:
        type(self).unpickled = True


def test_npz_with_object_array_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, user=np.array([_Trap(), _Trap()], dtype=object), item=np.arange(2), rating=np.ones(2))
    with pytest.raises(ValueError, match="evil.npz: array 'user' cannot be loaded safely"):
        load_ratings(path)
    assert not _Trap.unpickled


@pytest.mark.parametrize("payload", [b"PK\x03\x04 not really a zip", b"\x00\x01garbage"])
def test_npz_not_an_archive(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="broken.npz"):
        load_ratings(path)


def test_npz_single_array_and_text_ratings(tmp_path: Path) -> None:
    single = tmp_path / "one.npz"
    with zipfile.ZipFile(single, "w") as zf:
        buf = io.BytesIO()
        np.save(buf, np.array(["a", "b"]))
        for key in ("user", "item", "rating"):
            zf.writestr(f"{key}.npy", buf.getvalue())
    with pytest.raises(ValueError, match="one.npz: array 'rating' must be numeric"):
        load_ratings(single)


# ============================================================================= load_movielens
def test_movielens_100k_folder(tmp_path: Path) -> None:
    rs = load_movielens(ml100k(tmp_path))
    assert rs.nnz == 4 and rs.scale == (1.0, 5.0)
    assert list(rs.user_ids) == [7, 22, 186, 196]       # user 7 has side info only: a cold row
    assert list(rs.item_ids) == [1, 242, 302, 377]      # item 1 too
    assert rs.user_features.shape == (4, 30) and rs.item_features.shape == (4, 19)
    assert rs.item_feature_names == tuple(f"genre={g}" for g in ML100K_GENRES)
    assert row(rs, "user", 196) == {"gender=M": 1, "age=45-49": 1, "occupation=writer": 1}
    assert row(rs, "user", 186) == {"gender=F": 1, "age=35-44": 1, "occupation=executive": 1}
    assert row(rs, "user", 7) == {"gender=M": 1, "age=56+": 1, "occupation=administrator": 1}
    assert row(rs, "user", 22)["age=25-34"] == 1
    assert row(rs, "item", 302) == {"genre=Crime": 1, "genre=Film-Noir": 1, "genre=Mystery": 1,
                                    "genre=Thriller": 1}
    assert row(rs, "item", 1) == {"genre=Animation": 1, "genre=Children's": 1, "genre=Comedy": 1}
    assert np.all(rs.user_features.sum(axis=1) == 3)
    plain = load_movielens(tmp_path, side_info=False)
    assert plain.user_features is None and list(plain.user_ids) == [22, 186, 196]


def test_movielens_1m_folder(tmp_path: Path) -> None:
    rs = load_movielens(ml1m(tmp_path))
    assert rs.scale == (3.0, 5.0) and rs.nnz == 4
    assert list(rs.user_ids) == [1, 2, 3, 4]
    assert list(rs.item_ids) == [2, 260, 661, 1193, 3408, 3952]
    assert rs.user_features.shape == (4, 30) and rs.item_features.shape == (6, 18)
    assert rs.user_feature_names[:9] == ("gender=F", "gender=M", "age=Under 18", "age=18-24", "age=25-34",
                                         "age=35-44", "age=45-49", "age=50-55", "age=56+")
    assert rs.user_feature_names[9] == "occupation=other"
    assert row(rs, "user", 1) == {"gender=F": 1, "age=Under 18": 1, "occupation=K-12 student": 1}
    assert row(rs, "user", 2) == {"gender=M": 1, "age=56+": 1, "occupation=self-employed": 1}
    assert row(rs, "user", 4) == {"gender=M": 1, "age=45-49": 1, "occupation=executive/managerial": 1}
    assert rs.item_feature_names == tuple(f"genre={g}" for g in ML1M_GENRES)
    assert row(rs, "item", 260) == {"genre=Action": 1, "genre=Adventure": 1, "genre=Fantasy": 1,
                                    "genre=Sci-Fi": 1}
    assert row(rs, "item", 3952) == {"genre=Drama": 1, "genre=Musical": 1}  # the latin-1 title parsed


def test_movielens_10m_folder_with_tags(tmp_path: Path) -> None:
    rs = load_movielens(ml10m(tmp_path))
    assert rs.scale == (0.5, 5.0) and rs.user_features is None
    assert list(rs.item_ids) == [122, 185, 4973, 8130]
    genres = ["(no genres listed)", "Action", "Comedy", "Crime", "Romance", "Thriller"]
    # 3 distinct lower-cased tags on known movies ("orphan" is on an unknown movie): rank 3.
    assert rs.item_feature_names == tuple(f"genre={g}" for g in genres) + ("tag_svd_0", "tag_svd_1", "tag_svd_2")
    assert row(rs, "item", 8130) == {"genre=(no genres listed)": 1}  # no tags: zero embedding
    emb = rs.item_features[:, len(genres):]
    counts = np.array([[0, 2, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=float)  # excellent!, funny, hacker
    np.testing.assert_allclose(emb @ emb.T, _p_d_pt(counts), atol=1e-5)


def _p_d_pt(counts: np.ndarray) -> np.ndarray:
    p, d, _ = np.linalg.svd(counts, full_matrices=False)
    return (p * d) @ p.T


def test_movielens_20m_folder_with_tags(tmp_path: Path) -> None:
    rs = load_movielens(ml20m(tmp_path))
    assert rs.scale == (3.5, 4.0) and rs.nnz == 3
    assert list(rs.item_ids) == [2, 29, 131262]
    genres = ["Adventure", "Children", "Drama", "Fantasy", "Horror"]
    assert rs.item_feature_names[:5] == tuple(f"genre={g}" for g in genres)
    assert rs.item_features.shape == (3, 5 + 2)  # tags "robin williams" (x2) and "dark, surreal"
    emb = rs.item_features[:, 5:]
    np.testing.assert_allclose(emb @ emb.T, _p_d_pt(np.array([[0, 2], [1, 0], [0, 0.0]])), atol=1e-5)


def test_movielens_nested_zip_layout_and_errors(tmp_path: Path) -> None:
    ml1m(tmp_path / "outer" / "ml-1m")
    assert load_movielens(tmp_path / "outer").n_users == 4
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_movielens(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no MovieLens rating file"):
        load_movielens(tmp_path / "empty")


@pytest.mark.parametrize("name, content, message", [
    ("users.dat", "1::F::1::10\n", "users.dat: line 1: expected 5 fields"),
    ("users.dat", "1::X::1::10::0\n", "users.dat: .*outside the categories"),
    ("users.dat", "1::F::1::99::0\n", "users.dat: .*outside the categories"),
    ("users.dat", "1::F::old::1::0\n", "users.dat: line 1: age 'old' is not an integer"),
    ("users.dat", "1::F::1::1::0\n1::M::1::1::0\n", "users.dat: id 1 appears on more than one line"),
    ("movies.dat", "1193 One Flew\n", "movies.dat: line 1: expected MovieID::Title::Genres"),
])
def test_movielens_bad_side_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    ml1m(tmp_path)
    write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message):
        load_movielens(tmp_path)
    assert load_movielens(tmp_path, side_info=False).nnz == 4  # side files are not read then


def test_movielens_bad_u_item_flag(tmp_path: Path) -> None:
    ml100k(tmp_path)
    write(tmp_path / "u.item", "1|Toy|x||u|" + "|".join(["2"] + ["0"] * 18) + "\n")
    with pytest.raises(ValueError, match="u.item: genre flags must be 0 or 1"):
        load_movielens(tmp_path)


def test_npz_layout_folder(tmp_path: Path) -> None:
    np.savez(tmp_path / "ratings.npz", user=np.array([1, 2], np.int32), item=np.array([10, 20], np.int32),
             rating=np.array([4, 5], np.float32))
    write(tmp_path / "users.csv", "id,gender,age,occupation,zip\n1,F,18,4,0\n2,M,35,20,0\n3,M,1,0,0\n")
    write(tmp_path / "items.csv", "id,title,genres\n10,A (1990),Drama\n20,B (1991),Comedy|War\n30,C,Drama\n")
    rs = load_movielens(tmp_path)
    assert rs.scale == (4.0, 5.0)
    assert list(rs.user_ids) == [1, 2, 3] and list(rs.item_ids) == [10, 20, 30]
    assert rs.user_features.shape == (3, 30) and rs.item_features.shape == (3, 18)
    assert row(rs, "user", 2) == {"gender=M": 1, "age=35-44": 1, "occupation=writer": 1}
    assert row(rs, "item", 20) == {"genre=Comedy": 1, "genre=War": 1}


# ============================================================================= real data (shared folder)
def _shared(name: str) -> Path:
    folder = SHARED_DATA / name
    if not (folder / "ratings.npz").is_file():
        pytest.skip(f"real data set {name} not found at {folder} (team-only, not redistributable)")
    return folder


def test_shared_movielens_1m() -> None:
    folder = _shared("ml-1m")
    plain = load_movielens(folder, side_info=False)
    assert (plain.nnz, plain.n_users, plain.n_items) == (1_000_209, 6_040, 3_706)
    rs = load_movielens(folder)
    assert rs.nnz == 1_000_209 and rs.n_users == 6_040
    assert len(np.unique(rs.item)) == 3_706
    assert rs.n_items == 3_883  # movies.dat lists 177 movies nobody rated: cold items with genres
    assert rs.user_features.shape == (6_040, 30)
    assert np.all(rs.user_features.sum(axis=1) == 3)  # one gender, one age bracket, one occupation
    assert rs.item_features.shape == (3_883, 18)
    assert rs.scale == (1.0, 5.0)


def test_shared_movielens_100k() -> None:
    rs = load_movielens(_shared("ml-100k"))
    assert (rs.nnz, rs.n_users, rs.n_items) == (100_000, 943, 1_682)
    assert rs.user_features.shape == (943, 30) and rs.item_features.shape == (1_682, 19)
    assert np.all(rs.user_features.sum(axis=1) == 3)


# ============================================================================= property tests
_SEPS = [",", "\t", ";", " "]


@st.composite
def rating_files(draw: st.DrawFn) -> tuple[str, dict[tuple[int, int], float]]:
    pairs = draw(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=30,
                          unique=True))
    values = draw(st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=len(pairs),
                           max_size=len(pairs)))
    sep, header, stamp = draw(st.sampled_from(_SEPS)), draw(st.booleans()), draw(st.booleans())
    lines = [sep.join(["user", "item", "rating"] + (["timestamp"] if stamp else []))] if header else []
    for (u, i), r in zip(pairs, values):
        lines.append(sep.join([str(u), str(i), repr(float(r))] + (["12345"] if stamp else [])))
    return "\n".join(lines) + "\n", dict(zip(pairs, values))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rating_files())
def test_valid_generic_files_round_trip(tmp_path: Path, case: tuple[str, dict[tuple[int, int], float]]) -> None:
    text, expected = case
    rs = load_ratings(write(tmp_path / "prop.csv", text))
    got = {(int(rs.user_ids[u]), int(rs.item_ids[i])): float(r) for u, i, r in zip(rs.user, rs.item, rs.rating)}
    assert got == {k: float(np.float32(v)) for k, v in expected.items()}
    low, high = min(expected.values()), max(expected.values())
    assert rs.scale == (pytest.approx(low), pytest.approx(high if high > low else low + 1))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_garbage_gives_value_error_or_a_rating_set(tmp_path: Path, garbage: str | bytes) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(garbage if isinstance(garbage, bytes) else garbage.encode("utf-8"))
    try:
        result = load_ratings(path)
    except ValueError as exc:
        assert "garbage.csv" in str(exc)
    else:  # some random text is a valid rating file
        assert isinstance(result, RatingSet)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rating_files(), st.text(alphabet="abcxyz!?#", min_size=1, max_size=5), st.integers(0, 29))
def test_a_non_numeric_rating_is_always_a_value_error(tmp_path: Path, case: tuple[str, dict], word: str,
                                                      where: int) -> None:
    text, _ = case
    lines = text.splitlines()
    body = 1 if not lines[0][0].isdigit() else 0  # skip the header line
    k = body + where % (len(lines) - body)
    sep = next(s for s in _SEPS if s in lines[k])
    fields = lines[k].split(sep)
    fields[2] = word
    lines[k] = sep.join(fields)
    path = write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="bad.csv"):
        load_ratings(path)


# ============================================================================= download (never online)
def test_download_offline_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError) as info:
        download_movielens("ml-1m", tmp_path)
    message = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert str(tmp_path / "ml-1m") in message
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_download_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ml-1m"):
        download_movielens("ml-3m", tmp_path)


def _fake_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n2::1193::4::978298413\n")
    return buf.getvalue()


def test_download_verifies_and_extracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _fake_zip()
    calls = []

    def fake_urlopen(url: str, timeout: float = 0) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    spec = download.MOVIELENS["ml-1m"]
    # The real MD5 rejects the fake archive ...
    with pytest.raises(ValueError, match="does not match the published"):
        download_movielens("ml-1m", tmp_path)
    assert list(tmp_path.iterdir()) == []
    # ... and with the fake's MD5 it is renamed into place and unpacked.
    fake = download._Archive(spec.zip_name, spec.folder, hashlib.md5(payload).hexdigest(), len(payload))
    monkeypatch.setitem(download.MOVIELENS, "ml-1m", fake)
    folder = download_movielens("ml-1m", tmp_path)
    assert folder == tmp_path / "ml-1m" and (tmp_path / "ml-1m.zip").read_bytes() == payload
    assert load_ratings(folder / "ratings.dat").nnz == 2
    assert download_movielens("ml-1m", tmp_path) == folder and len(calls) == 2  # reused, no new fetch
    assert download_movielens("ml-1m", tmp_path, force=True) == folder and len(calls) == 3  # fetched again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-1m", "ml-1m.zip"]
