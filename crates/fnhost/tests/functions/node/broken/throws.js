throw new Error('import-time failure');
