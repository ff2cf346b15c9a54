from morpheus.cli import main

main()
