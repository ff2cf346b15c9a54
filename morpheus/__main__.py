from morpheus.cli.app import main

main()
