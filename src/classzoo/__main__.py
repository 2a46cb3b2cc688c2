from classzoo.cli import main

raise SystemExit(main())
