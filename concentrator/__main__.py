from concentrator.cli import main

main()
