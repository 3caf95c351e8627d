// The `task-management` executable: everything it does is in App (a library, so tests and fuzz
// targets can link it).
import App

await TaskManagement.main()
