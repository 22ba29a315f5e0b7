from qbctl.launch import run

run()
