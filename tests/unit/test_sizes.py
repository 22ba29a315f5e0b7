import pytest

from qbctl.config.sizes import MB, fmt_mb, parse_size, pg_size, redis_size


@pytest.mark.parametrize(
    "text,expected",
    [
        ("150mb", 150 * MB),
        ("128MB", 128 * MB),
        ("1GB", 1024 * MB),
        ("4MB", 4 * MB),
        ("512kB", 512 * 1024),
        ("1048576", MB),
        (" 2 gb ", 2048 * MB),
        ("1.5GB", 1536 * MB),
        ("64m", 64 * MB),
        ("150MiB", 150 * MB),
        ("1GiB", 1024 * MB),
        ("512KiB", 512 * 1024),
        ("150mib", 150 * MB),
    ],
)
def test_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1MB", "0MB", "12 XB", "MB"])
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_spellings():
    assert pg_size(128 * MB) == "128MB" and pg_size(1536 * 1024) == "1536kB"
    assert redis_size(120 * MB) == "120mb" and redis_size(1000) == "1000"
    assert fmt_mb(5.5 * MB) == "5.5MB" and fmt_mb(300 * MB) == "300MB" and fmt_mb(None) == "-"
