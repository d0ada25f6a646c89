from railnet.cli.main import main

raise SystemExit(main())
