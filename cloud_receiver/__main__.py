from cloud_receiver.cli import main

main()
