from convodesk.cli import main

main()
