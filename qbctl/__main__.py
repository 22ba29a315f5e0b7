from qbctl.cli import run

run()
