"""The project stands alone: a clone anywhere has everything its tests, README and benches need."""
import re
import subprocess

from .conftest import MAKE_RECORDS, ROOT, SAMPLE_INPUT, SAMPLE_SUMMARY

# A path that climbs out of the project to a `shared` folder beside it, however it is spelled.
OUTSIDE = re.compile(r"""\.\./shared|parents?\[?\d*\]?\s*/\s*["']shared["']|parent\s*/\s*["']shared["']""")


def test_what_the_tests_and_benches_read_ships_inside_the_project():
    for path in (SAMPLE_INPUT, SAMPLE_SUMMARY, MAKE_RECORDS):
        assert path.is_file() and ROOT in path.parents


def test_no_file_of_the_project_reads_a_folder_beside_it():
    files = subprocess.run(["git", "ls-files", "*.py", "*.sh", "*.md", ".ci/*"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    offenders = [f for f in files if f != "tests/test_project.py" and OUTSIDE.search((ROOT / f).read_text())]
    assert offenders == []
