#!/usr/bin/env node
'use strict';
// The bundle with its code cache (npm run build makes both) starts faster;
// without it (a tree holding only dist/src), the modules as tsc wrote them.
const path = require('node:path');
const bundle = path.join(__dirname, '..', 'dist', 'bundle', 'dfget.js');
require(require('node:fs').existsSync(bundle) ? bundle : '../dist/src/cli/dfget.js').run();
