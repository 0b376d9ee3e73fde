from spacebridge.cli import main

main()
