from hil_sim.cli import main

main()
