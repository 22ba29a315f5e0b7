from qbctl.cli import main

main()
